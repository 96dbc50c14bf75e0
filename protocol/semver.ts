// Semantic versions (semver.org 2.0.0) for agent versions and the minimum versions actions require. One
// definition, because the broker accepts an agent's `hello`, the policy compares versions and the agent
// reports its own: they must agree on what a version is and how two compare.

/** `1.2.3`, `1.2.3-rc.1`, `1.2.3+build.5`, `1.2.3-rc.1+build.5`. */
export const SEMVER_PATTERN =
  /^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$/;

export function isSemver(v: string): boolean {
  return v.length <= 64 && SEMVER_PATTERN.test(v);
}

function parts(v: string) {
  const m = SEMVER_PATTERN.exec(v.trim().replace(/^v/i, ''));
  if (m) {
    return { nums: [Number(m[1]), Number(m[2]), Number(m[3])], pre: m[4]?.split('.') };
  }
  // Lenient fallback for stored values older than the strict check ("1.2", "2"): missing parts count as 0.
  const [core = '', pre] = v.trim().replace(/^v/i, '').split('+', 1)[0]!.split('-', 2);
  return { nums: core.split('.').map((p) => Number.parseInt(p, 10) || 0), pre: pre?.split('.') };
}

function comparePre(a: string[] | undefined, b: string[] | undefined): number {
  if (!a && !b) return 0;
  if (!a) return 1; // a release sorts after any of its pre-releases
  if (!b) return -1;
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i];
    const y = b[i];
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    const xn = /^\d+$/.test(x);
    const yn = /^\d+$/.test(y);
    if (xn && yn) {
      const d = Number(x) - Number(y);
      if (d !== 0) return d < 0 ? -1 : 1;
    } else if (xn !== yn) return xn ? -1 : 1;
    else if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

/**
 * Compares two versions by semver precedence: numerically (1.10.0 > 1.9.2), a pre-release before its
 * release (1.2.0-rc.1 < 1.2.0), build metadata ignored. Returns -1, 0 or 1.
 */
export function compareVersions(a: string, b: string): number {
  const x = parts(a);
  const y = parts(b);
  for (let i = 0; i < Math.max(x.nums.length, y.nums.length); i++) {
    const d = (x.nums[i] ?? 0) - (y.nums[i] ?? 0);
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return comparePre(x.pre, y.pre);
}
