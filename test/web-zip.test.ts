import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { safeEntryName, zipEvidence } from '../web-stepup/evidence-zip.ts';

async function drain(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks);
}

describe('evidence zip', () => {
  it('never finishes a zip whose source broke part-way', async () => {
    async function* broken() {
      yield Buffer.alloc(64 * 1024, 1);
      throw new Error('agent disconnected');
    }
    const out = zipEvidence('sample.bin', Readable.from(broken()), new Date('2026-11-28T09:00:00Z'));
    await expect(drain(out)).rejects.toThrow();
  });

  it('keeps only a plain file name for the entry and the download', () => {
    expect(safeEntryName('C:\\Users\\bob\\evil.exe')).toBe('evil.exe');
    expect(safeEntryName('/tmp/../../etc/passwd')).toBe('passwd');
    expect(safeEntryName('a"b\u0000c\nd')).toBe('a_b_c_d');
    expect(safeEntryName('..')).toBe('evidence.bin');
    expect(safeEntryName('')).toBe('evidence.bin');
  });
});
