// Private notes for a person in a shared conversation, where Teams has no ephemeral messages and a bot
// cannot open a 1:1 chat with someone from another tenant. The note's text is sealed (AES-256-GCM under a
// key derived from the platform secret, bound to the recipient's Entra object id) into the card's refresh
// data; only the recipient's client asks for it, and the bot opens it only for a refresh signed by Bot
// Framework as coming from that same person. Anyone else holding the card sees ciphertext. Stateless, so
// whichever process receives the refresh can open the note.
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';

const VERSION = 'n1';

export function deriveNoteKey(secretKey: Buffer): Buffer {
  return Buffer.from(
    hkdfSync('sha256', secretKey, Buffer.alloc(0), 'active-response teams private notes v1', 32),
  );
}

export function createNoteSealer(key: Buffer) {
  if (key.length !== 32) throw new Error('a private-note key is 32 bytes');
  const aadFor = (recipient: string) => Buffer.from(`teams-note:${recipient.toLowerCase()}`);
  return {
    /** Seals `text` for the person with Entra object id `recipient`. */
    seal(recipient: string, text: string): string {
      const iv = randomBytes(12);
      const cipher = createCipheriv('aes-256-gcm', key, iv);
      cipher.setAAD(aadFor(recipient));
      const ct = Buffer.concat([cipher.update(text, 'utf8'), cipher.final()]);
      return `${VERSION}.${Buffer.concat([iv, cipher.getAuthTag(), ct]).toString('base64url')}`;
    },
    /** The text, when `viewer` is the recipient and the note is intact; otherwise undefined. */
    open(sealed: unknown, viewer: string): string | undefined {
      if (typeof sealed !== 'string' || !sealed.startsWith(`${VERSION}.`) || sealed.length > 20_000)
        return undefined;
      const raw = Buffer.from(sealed.slice(VERSION.length + 1), 'base64url');
      if (raw.length < 29) return undefined;
      try {
        const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, 12));
        decipher.setAAD(aadFor(viewer));
        decipher.setAuthTag(raw.subarray(12, 28));
        return Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8');
      } catch {
        return undefined;
      }
    },
  };
}

export type NoteSealer = ReturnType<typeof createNoteSealer>;
