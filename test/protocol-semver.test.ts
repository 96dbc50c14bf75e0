// Agent versions as the broker accepts them in hello and the policy compares them (SemVer 2.0.0).
import { describe, expect, it } from 'vitest';
import { helloFrame } from '../protocol/frames.ts';
import { compareVersions, isSemver } from '../protocol/semver.ts';

const hello = (agentVersion: string) =>
  helloFrame.safeParse({
    type: 'hello',
    v: 2,
    hostname: 'web-01',
    os: 'linux',
    osVersion: '6.1',
    agentVersion,
    capabilities: [],
    isolated: false,
  }).success;

describe('agent versions', () => {
  it('accepts a release, a pre-release, build metadata, and both together', () => {
    for (const v of [
      '1.2.3',
      '1.2.3-rc.1',
      '1.2.3+build.5',
      '1.2.3-rc.1+build.5',
      '0.0.0-alpha-1+exp.sha.5114f85',
    ]) {
      expect(isSemver(v), v).toBe(true);
      expect(hello(v), v).toBe(true);
    }
  });

  it('refuses what is not SemVer', () => {
    for (const v of [
      '1.2',
      '01.2.3',
      '1.2.3-',
      '1.2.3+',
      '1.2.3-rc..1',
      'v1.2.3',
      '1.2.3 ',
      'x'.repeat(65),
    ]) {
      expect(isSemver(v), v).toBe(false);
      expect(hello(v), v).toBe(false);
    }
  });

  it('orders by precedence and ignores build metadata', () => {
    expect(compareVersions('1.4.0-rc.1+build.5', '1.4.0-rc.1')).toBe(0);
    expect(compareVersions('1.4.0-rc.1+build.5', '1.4.0')).toBe(-1);
    expect(compareVersions('1.4.0-rc.2', '1.4.0-rc.10')).toBe(-1);
    expect(compareVersions('1.2.0+build.9', '1.2.0')).toBe(0);
  });
});
