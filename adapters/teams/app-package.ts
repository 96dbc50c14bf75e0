// `npm run teams:package`: the Teams app package to sideload ("Upload a custom app") or hand to a Teams
// admin: manifest.json with this installation's bot id and public host filled in, and the two icons, zipped
// flat as Teams wants. Reads TEAMS_CLIENT_ID and PUBLIC_URL from the environment (as the server does), or
// --client-id and --public-url; writes dist/active-response-teams.zip unless --out says otherwise.
//
// The app's own id (not the bot's) is derived from the bot id, so rebuilding the package updates the same
// app in Teams instead of installing a second one; TEAMS_APP_ID (or --app-id) overrides it.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { configure, Uint8ArrayReader, Uint8ArrayWriter, ZipWriter } from '@zip.js/zip.js';

configure({ useWebWorkers: false });

const HERE = fileURLToPath(new URL('.', import.meta.url));
const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export class PackageError extends Error {
  override name = 'PackageError';
}

/** A stable GUID for the Teams app, from the bot id (name-based, like a UUIDv5). */
export function appIdFor(clientId: string): string {
  const h = createHash('sha1').update(`active-response teams app ${clientId.toLowerCase()}`).digest();
  h[6] = (h[6]! & 0x0f) | 0x50;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

/** Width, height and whether the PNG has an alpha channel, from its header. */
export function pngInfo(buf: Buffer): { width: number; height: number; alpha: boolean } {
  if (buf.length < 33 || buf.readUInt32BE(0) !== 0x89504e47 || buf.toString('ascii', 12, 16) !== 'IHDR') {
    throw new PackageError('not a PNG file');
  }
  const colorType = buf[25]!;
  return {
    width: buf.readUInt32BE(16),
    height: buf.readUInt32BE(20),
    alpha: colorType === 4 || colorType === 6,
  };
}

export interface PackageInput {
  /** The bot's Entra application (client) id (TEAMS_CLIENT_ID). */
  clientId?: string;
  /** Where people reach the platform (PUBLIC_URL); https. */
  publicUrl?: string;
  appId?: string;
}

/** The filled-in manifest and the icons, checked; throws PackageError saying what to fix. */
export function prepareTeamsPackage(input: PackageInput) {
  const clientId = input.clientId?.trim();
  if (!clientId || !GUID.test(clientId)) {
    throw new PackageError(
      "TEAMS_CLIENT_ID (or --client-id) must be the bot's Entra application (client) id, a GUID such as 5c1f0a4e-7b7e-4d7c-9a43-0e2f5d3b8a11",
    );
  }
  let url: URL;
  try {
    url = new URL(input.publicUrl ?? '');
  } catch {
    throw new PackageError(
      'PUBLIC_URL (or --public-url) must be the https:// address people reach the platform at',
    );
  }
  if (url.protocol !== 'https:') {
    throw new PackageError(
      `PUBLIC_URL must be https:// for Teams (got ${url.protocol}//${url.host}); Teams refuses plain-http app URLs`,
    );
  }
  const appId = input.appId?.trim() || appIdFor(clientId);
  if (!GUID.test(appId)) throw new PackageError('TEAMS_APP_ID (or --app-id) must be a GUID');

  const template = readFileSync(resolve(HERE, 'manifest.json'), 'utf8');
  const values: Record<string, string> = {
    TEAMS_APP_ID: appId,
    TEAMS_CLIENT_ID: clientId.toLowerCase(),
    PUBLIC_URL: url.origin,
    PUBLIC_HOST: url.host,
  };
  const text = template.replace(/\{\{([A-Z_]+)\}\}/g, (m, name: string) => values[name] ?? m);
  const left = text.match(/\{\{[A-Z_]+\}\}/);
  if (left) throw new PackageError(`manifest.json still has a placeholder ${left[0]}`);
  const manifest = JSON.parse(text) as { icons: { color: string; outline: string } };

  const color = readFileSync(resolve(HERE, manifest.icons.color));
  const outline = readFileSync(resolve(HERE, manifest.icons.outline));
  const c = pngInfo(color);
  const o = pngInfo(outline);
  if (c.width !== 192 || c.height !== 192)
    throw new PackageError(`the colour icon must be 192×192, not ${c.width}×${c.height}`);
  if (o.width !== 32 || o.height !== 32 || !o.alpha) {
    throw new PackageError('the outline icon must be 32×32 with a transparent background');
  }
  return {
    manifest,
    files: [
      { name: 'manifest.json', data: Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`) },
      { name: manifest.icons.color, data: color },
      { name: manifest.icons.outline, data: outline },
    ],
  };
}

/** Builds the zip (entries flat, no folders) and writes it to `out`. */
export async function buildTeamsPackage(input: PackageInput & { out: string }) {
  const { manifest, files } = prepareTeamsPackage(input);
  const writer = new ZipWriter(new Uint8ArrayWriter());
  for (const f of files) await writer.add(f.name, new Uint8ArrayReader(new Uint8Array(f.data)));
  const zip = await writer.close();
  mkdirSync(dirname(input.out), { recursive: true });
  writeFileSync(input.out, zip);
  return { path: input.out, manifest, bytes: zip.byteLength };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      'client-id': { type: 'string' },
      'public-url': { type: 'string' },
      'app-id': { type: 'string' },
      out: { type: 'string', default: 'dist/active-response-teams.zip' },
    },
  });
  buildTeamsPackage({
    clientId: values['client-id'] ?? process.env.TEAMS_CLIENT_ID,
    publicUrl: values['public-url'] ?? process.env.PUBLIC_URL,
    appId: values['app-id'] ?? process.env.TEAMS_APP_ID,
    out: resolve(values.out!),
  })
    .then((r) => {
      const m = r.manifest as unknown as { id: string; bots: { botId: string }[] };
      console.log(`wrote ${r.path} (${r.bytes} bytes): app ${m.id}, bot ${m.bots[0]!.botId}`);
      console.log('Upload it in Teams: Apps → Manage your apps → Upload an app → Upload a custom app.');
    })
    .catch((err: unknown) => {
      console.error(err instanceof PackageError ? `Cannot build the Teams package: ${err.message}` : err);
      process.exit(2);
    });
}
