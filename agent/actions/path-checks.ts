// Path checks for fetch and put: absolute paths only, and when an allowed root is configured, the real path
// (every symlink resolved) must stay inside it, so a link cannot lead out of the root.
import { lstat, realpath, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, sep } from 'node:path';

function inside(root: string, p: string) {
  const rel = relative(root, p);
  return rel === '' || (!rel.startsWith('..') && !rel.startsWith(sep) && !isAbsolute(rel));
}

export async function checkReadable(path: string, allowedRoot?: string) {
  if (!isAbsolute(path)) throw new Error(`"${path}" is not an absolute path`);
  const real = await realpath(path).catch(() => {
    throw new Error(`"${path}" does not exist`);
  });
  if (allowedRoot && !inside(await realpath(allowedRoot), real)) {
    throw new Error(`"${path}" resolves outside the allowed root ${allowedRoot}`);
  }
  const st = await stat(real);
  if (!st.isFile()) throw new Error(`"${path}" is not a regular file`);
  return { real, size: st.size };
}

export async function checkWritable(path: string, allowedRoot?: string) {
  if (!isAbsolute(path)) throw new Error(`"${path}" is not an absolute path`);
  const dir = await realpath(dirname(path)).catch(() => {
    throw new Error(`the directory of "${path}" does not exist`);
  });
  const target = join(dir, basename(path));
  if (allowedRoot && !inside(await realpath(allowedRoot), target)) {
    throw new Error(`"${path}" is outside the allowed root ${allowedRoot}`);
  }
  const existing = await lstat(target).catch(() => undefined);
  if (existing?.isSymbolicLink())
    throw new Error(`"${path}" is a symbolic link; refusing to write through it`);
  if (existing && !existing.isFile()) throw new Error(`"${path}" exists and is not a regular file`);
  return target;
}
