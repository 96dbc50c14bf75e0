// Fetched evidence leaves the platform only inside a password-protected zip with the industry's `infected`
// convention. The password keeps mail gateways and antivirus from quarantining the file and stops an
// accidental double-click; it is not confidentiality (the step-up and TLS are). We use WinZip AES-256
// (zip.js's default encryption) rather than ZipCrypto, which is broken by a known-plaintext attack: 7-Zip,
// WinRAR, Keka, The Unarchiver and Python's pyzipper open it; Windows Explorer and Info-ZIP `unzip` do not.
import { Readable } from 'node:stream';
import type { ReadableStream as NodeWebReadableStream } from 'node:stream/web';
import { configure, ZipWriter } from '@zip.js/zip.js';

export const EVIDENCE_ZIP_PASSWORD = 'infected';

// Node has no Web Workers; compress and encrypt on the main thread.
configure({ useWebWorkers: false });

/** A file name safe to use inside the zip and in Content-Disposition: no path, no control characters. */
export function safeEntryName(name: string): string {
  const base = name.split(/[\\/]/).pop() ?? '';
  // biome-ignore lint/suspicious/noControlCharactersInRegex: removing control characters is the point.
  const cleaned = base.replace(/[\u0000-\u001f\u007f"]/g, '_').trim();
  return cleaned && cleaned !== '.' && cleaned !== '..' ? cleaned.slice(0, 200) : 'evidence.bin';
}

/**
 * Streams `source` as a single-entry AES-256 zip. The returned stream errors (and the HTTP response is cut)
 * if the source fails part-way, so a partial file is never delivered as a complete zip.
 */
export function zipEvidence(entryName: string, source: NodeJS.ReadableStream, modified: Date): Readable {
  const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
  const writer = new ZipWriter(writable, {
    password: EVIDENCE_ZIP_PASSWORD,
    encryptionStrength: 3,
    level: 6,
    lastModDate: modified,
  });
  const input = Readable.toWeb(Readable.from(source)) as unknown as ReadableStream<Uint8Array>;
  const done = writer
    .add(entryName, input)
    .then(() => writer.close())
    .catch(async (err: unknown) => {
      await writable.abort(err).catch(() => {});
    });
  void done;
  return Readable.fromWeb(readable as unknown as NodeWebReadableStream<Uint8Array>);
}
