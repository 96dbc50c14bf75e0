// `npm run teams:package`: the app package Teams accepts for "Upload a custom app": manifest.json with this
// installation's bot id and host, and both icons at the sizes Teams requires, zipped flat.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlobReader, type FileEntry, TextWriter, Uint8ArrayWriter, ZipReader } from '@zip.js/zip.js';
import { afterEach, describe, expect, it } from 'vitest';
import { appIdFor, buildTeamsPackage, pngInfo, prepareTeamsPackage } from '../adapters/teams/app-package.ts';

const CLIENT_ID = '5c1f0a4e-7b7e-4d7c-9a43-0e2f5d3b8a11';

describe('Teams app package', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ar-teams-package-'));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('zips the manifest and both icons flat, with the bot id, the host and a stable app id', async () => {
    const out = join(dir, 'app.zip');
    await buildTeamsPackage({ clientId: CLIENT_ID, publicUrl: 'https://ar.example.com/', out });
    const reader = new ZipReader(new BlobReader(new Blob([readFileSync(out)])));
    const entries = (await reader.getEntries()) as FileEntry[];
    expect(entries.map((e) => e.filename).sort()).toEqual(['color.png', 'manifest.json', 'outline.png']);
    const manifest = JSON.parse(
      await entries.find((e) => e.filename === 'manifest.json')!.getData(new TextWriter()),
    );
    expect(manifest).toMatchObject({
      manifestVersion: '1.25',
      id: appIdFor(CLIENT_ID),
      icons: { color: 'color.png', outline: 'outline.png' },
      validDomains: ['ar.example.com'],
      developer: { websiteUrl: 'https://ar.example.com/' },
      supportsChannelFeatures: 'tier1',
      bots: [{ botId: CLIENT_ID, scopes: ['team', 'groupChat', 'personal'], supportsFiles: false }],
    });
    expect(manifest.description.short.length).toBeLessThanOrEqual(80);
    for (const list of manifest.bots[0].commandLists) expect(list.commands.length).toBeLessThanOrEqual(10);
    const color = pngInfo(
      Buffer.from(await entries.find((e) => e.filename === 'color.png')!.getData(new Uint8ArrayWriter())),
    );
    const outline = pngInfo(
      Buffer.from(await entries.find((e) => e.filename === 'outline.png')!.getData(new Uint8ArrayWriter())),
    );
    expect(color).toMatchObject({ width: 192, height: 192 });
    expect(outline).toEqual({ width: 32, height: 32, alpha: true });
    await reader.close();
    // Rebuilding updates the same app rather than adding another.
    expect(appIdFor(CLIENT_ID)).toBe(appIdFor(CLIENT_ID.toUpperCase()));
  });

  it('says what to fix: no bot id, or a public URL Teams would refuse', () => {
    expect(() => prepareTeamsPackage({ publicUrl: 'https://ar.example.com' })).toThrow(
      /TEAMS_CLIENT_ID .* must be the bot's Entra application \(client\) id/,
    );
    expect(() => prepareTeamsPackage({ clientId: CLIENT_ID, publicUrl: 'http://localhost:8080' })).toThrow(
      /PUBLIC_URL must be https:\/\/ for Teams/,
    );
    expect(() => prepareTeamsPackage({ clientId: CLIENT_ID })).toThrow(
      /PUBLIC_URL .* must be the https:\/\/ address/,
    );
  });
});
