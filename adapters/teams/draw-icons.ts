// Draws the Teams app's two icons as PNGs with nothing but Node: a 192×192 colour icon (a white shield with
// a check mark on the app's accent colour) and the 32×32 outline icon Teams wants (white on a transparent
// background). The PNGs are committed; run this again only to change them:
//
//   npx tsx adapters/teams/draw-icons.ts
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { deflateSync } from 'node:zlib';

type Rgba = [number, number, number, number];

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(buf: Buffer): number {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}

/** An 8-bit RGBA PNG (colour type 6) of `size`×`size` from a pixel function. */
export function png(size: number, pixel: (x: number, y: number) => Rgba): Buffer {
  const raw = Buffer.alloc(size * (size * 4 + 1));
  for (let y = 0; y < size; y++) {
    raw[y * (size * 4 + 1)] = 0; // filter: none
    for (let x = 0; x < size; x++) raw.set(pixel(x, y), y * (size * 4 + 1) + 1 + x * 4);
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr.set([8, 6, 0, 0, 0], 8);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw, { level: 9 })),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** The shield in unit coordinates (u, v in -1..1): flat top, straight sides, a rounded point below. */
function inShield(u: number, v: number, scale = 1): boolean {
  const top = -0.78 * scale;
  const shoulder = 0.05 * scale;
  const tip = 0.9 * scale;
  const half = 0.68 * scale;
  if (v < top || v > tip) return false;
  if (v <= shoulder) return Math.abs(u) <= half;
  const t = (v - shoulder) / (tip - shoulder);
  return Math.abs(u) <= half * Math.sqrt(1 - t * t);
}

/** The check mark: two strokes, as distance to line segments. */
function inCheck(u: number, v: number, width: number): boolean {
  const seg = (ax: number, ay: number, bx: number, by: number) => {
    const dx = bx - ax;
    const dy = by - ay;
    const t = Math.max(0, Math.min(1, ((u - ax) * dx + (v - ay) * dy) / (dx * dx + dy * dy)));
    return Math.hypot(u - (ax + t * dx), v - (ay + t * dy));
  };
  return Math.min(seg(-0.32, 0.02, -0.08, 0.28), seg(-0.08, 0.28, 0.36, -0.26)) <= width;
}

/** Supersamples `cover` (4×4 per pixel) into an alpha value. */
function coverage(size: number, x: number, y: number, cover: (u: number, v: number) => boolean): number {
  let hits = 0;
  for (let i = 0; i < 4; i++)
    for (let j = 0; j < 4; j++) {
      const u = ((x + (i + 0.5) / 4) / size) * 2 - 1;
      const v = ((y + (j + 0.5) / 4) / size) * 2 - 1;
      if (cover(u, v)) hits++;
    }
  return hits / 16;
}

const ACCENT: [number, number, number] = [0x1f, 0x29, 0x37];
const WHITE: [number, number, number] = [0xff, 0xff, 0xff];

export function colorIcon(): Buffer {
  const size = 192;
  return png(size, (x, y) => {
    const shield = coverage(size, x, y, (u, v) => inShield(u, v, 0.82) && !inCheck(u, v / 0.82, 0.085));
    const mix = (a: number, b: number) => Math.round(a * (1 - shield) + b * shield);
    return [mix(ACCENT[0], WHITE[0]), mix(ACCENT[1], WHITE[1]), mix(ACCENT[2], WHITE[2]), 255];
  });
}

export function outlineIcon(): Buffer {
  const size = 32;
  // A two-pixel white outline of the shield and the check mark, on transparency.
  const ring = (u: number, v: number) => inShield(u, v, 0.92) && !inShield(u / 0.78, (v + 0.02) / 0.78, 0.92);
  return png(size, (x, y) => {
    const a = coverage(size, x, y, (u, v) => ring(u, v) || inCheck(u, v, 0.09));
    return [255, 255, 255, Math.round(a * 255)];
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const here = new URL('.', import.meta.url);
  writeFileSync(new URL('color.png', here), colorIcon());
  writeFileSync(new URL('outline.png', here), outlineIcon());
  console.log('wrote adapters/teams/color.png (192×192) and adapters/teams/outline.png (32×32)');
}
