import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { resolveCheckpointKeys } from '../app/audit-anchoring.ts';
import { ConfigError, loadConfig, parseDuration, resolveSecretKey } from '../app/config.ts';
import { checkpointKeysFromSecret, publicKeyPem } from '../bot/audit/audit-keys.ts';

describe('config', () => {
  it('comes up with defaults on an empty environment', () => {
    const c = loadConfig({});
    expect(c.HTTP_PORT).toBe(8080);
    expect(c.BROKER_PORT).toBe(8443);
    expect(c.DATABASE_URL).toBeUndefined();
    expect(c.PUBLIC_URL).toBe('http://localhost:8080');
    expect(c.STEPUP_WINDOW).toBe(600);
    expect(c.secureCookies).toBe(false);
  });

  it('refuses a malformed DATABASE_URL with a message naming the variable', () => {
    expect(() => loadConfig({ DATABASE_URL: 'not a url' })).toThrow(ConfigError);
    expect(() => loadConfig({ DATABASE_URL: 'not a url' })).toThrow(/DATABASE_URL is not a URL/);
    expect(() => loadConfig({ DATABASE_URL: 'mysql://root@localhost/test' })).toThrow(
      /DATABASE_URL has scheme "mysql:"; expected postgres:\/\//,
    );
    expect(() => loadConfig({ DATABASE_URL: 'postgres://localhost' })).toThrow(
      /DATABASE_URL needs a host and a database/,
    );
  });

  it('names every bad variable at once and never echoes a secret value', () => {
    let message = '';
    try {
      loadConfig({ HTTP_PORT: '99999', SECRET_KEY: 'hunter2-not-a-key', STEPUP_WINDOW: 'ten minutes' });
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(/HTTP_PORT/);
    expect(message).toMatch(/SECRET_KEY must be 32 bytes/);
    expect(message).toMatch(/STEPUP_WINDOW expected a duration/);
    expect(message).not.toContain('hunter2');
  });

  it('holds read-only work above READ_ONLY_APPROVAL_ABOVE endpoints (default 50) for an approval', () => {
    expect(loadConfig({}).READ_ONLY_APPROVAL_ABOVE).toBe(50);
    expect(loadConfig({ READ_ONLY_APPROVAL_ABOVE: '200' }).READ_ONLY_APPROVAL_ABOVE).toBe(200);
    expect(() => loadConfig({ READ_ONLY_APPROVAL_ABOVE: '0' })).toThrow(/READ_ONLY_APPROVAL_ABOVE/);
    expect(() => loadConfig({ READ_ONLY_APPROVAL_ABOVE: 'many' })).toThrow(/READ_ONLY_APPROVAL_ABOVE/);
  });

  it('derives secure cookies from an https PUBLIC_URL', () => {
    expect(loadConfig({ PUBLIC_URL: 'https://ar.example.com/' })).toMatchObject({
      PUBLIC_URL: 'https://ar.example.com',
      secureCookies: true,
    });
  });

  it('trusts no proxy by default, and takes addresses, CIDRs, range names, a hop count or true', () => {
    expect(loadConfig({}).TRUST_PROXY).toBe(false);
    expect(loadConfig({ TRUST_PROXY: '10.0.0.5, 10.0.1.0/24,loopback,::1' }).TRUST_PROXY).toEqual([
      '10.0.0.5',
      '10.0.1.0/24',
      'loopback',
      '::1',
    ]);
    expect(loadConfig({ TRUST_PROXY: '1' }).TRUST_PROXY).toBe(1);
    expect(loadConfig({ TRUST_PROXY: 'true' }).TRUST_PROXY).toBe(true);
    expect(() => loadConfig({ TRUST_PROXY: 'proxy.example.com' })).toThrow(
      /TRUST_PROXY has "proxy.example.com", which is not an IP address or CIDR/,
    );
    expect(() => loadConfig({ TRUST_PROXY: '10.0.0.0/33' })).toThrow(/TRUST_PROXY/);
  });

  it('has HTTP timeouts and a start-up wait, and refuses a header timeout longer than the request one', () => {
    expect(loadConfig({})).toMatchObject({
      HTTP_REQUEST_TIMEOUT: 30,
      HTTP_HEADERS_TIMEOUT: 10,
      HTTP_KEEPALIVE_TIMEOUT: 5,
      HTTP_CONNECTION_TIMEOUT: 60,
      HTTP_BODY_LIMIT: 1024 * 1024,
      DB_START_TIMEOUT: 120,
    });
    expect(() => loadConfig({ HTTP_HEADERS_TIMEOUT: '1m' })).toThrow(
      /HTTP_HEADERS_TIMEOUT must not be longer than HTTP_REQUEST_TIMEOUT/,
    );
    expect(() => loadConfig({ DB_START_TIMEOUT: 'forever' })).toThrow(/DB_START_TIMEOUT expected a duration/);
  });

  it('takes the broker heartbeat as a duration (default 30 s, at most 10 minutes)', () => {
    expect(loadConfig({}).BROKER_HEARTBEAT).toBe(30);
    expect(loadConfig({ BROKER_HEARTBEAT: '5s' }).BROKER_HEARTBEAT).toBe(5);
    expect(() => loadConfig({ BROKER_HEARTBEAT: '1h' })).toThrow(/BROKER_HEARTBEAT must be at most 10m/);
    expect(() => loadConfig({ BROKER_HEARTBEAT: '0s' })).toThrow(/BROKER_HEARTBEAT expected a duration/);
  });

  it('parses durations', () => {
    expect(parseDuration('30s')).toBe(30);
    expect(parseDuration('7d')).toBe(604800);
    expect(parseDuration('7 weeks')).toBeUndefined();
  });

  it('generates the secret key once into DATA_DIR with mode 0600 and reuses it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ar-cfg-'));
    const c = loadConfig({ DATA_DIR: dir });
    const k1 = resolveSecretKey(c);
    const k2 = resolveSecretKey(c);
    expect(k1.length).toBe(32);
    expect(k2.equals(k1)).toBe(true);
    expect(statSync(join(dir, 'secret.key')).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(dir, 'secret.key'), 'utf8').trim()).toBe(k1.toString('hex'));
  });

  it('refuses a migration URL without the application URL, and an audit channel without Slack', () => {
    expect(() => loadConfig({ DATABASE_MIGRATION_URL: 'postgres://owner@db/ar' })).toThrow(
      /DATABASE_MIGRATION_URL is set without DATABASE_URL/,
    );
    expect(() => loadConfig({ SLACK_AUDIT_CHANNEL: 'C0AUDIT1' })).toThrow(
      /SLACK_AUDIT_CHANNEL is set but Slack is not configured/,
    );
    expect(() => loadConfig({ SLACK_AUDIT_CHANNEL: 'audit log' })).toThrow(
      /SLACK_AUDIT_CHANNEL must be a channel ID such as C0123ABCD/,
    );
    const c = loadConfig({
      DATABASE_URL: 'postgres://ar_app@db/ar',
      DATABASE_MIGRATION_URL: 'postgres://owner@db/ar',
    });
    expect(c.DATABASE_MIGRATION_URL).toBe('postgres://owner@db/ar');
  });

  it('signs audit checkpoints with AUDIT_SIGNING_KEY when given, else with the key derived from SECRET_KEY', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ar-signing-'));
    const secret = Buffer.alloc(32, 3);
    const derived = resolveCheckpointKeys(loadConfig({ DATA_DIR: dir }), secret);
    expect(publicKeyPem(derived)).toBe(publicKeyPem(checkpointKeysFromSecret(secret)));

    const { privateKey } = generateKeyPairSync('ed25519');
    const pem = join(dir, 'audit-signing.pem');
    writeFileSync(pem, privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
    const own = resolveCheckpointKeys(loadConfig({ AUDIT_SIGNING_KEY: pem }), secret);
    expect(publicKeyPem(own)).not.toBe(publicKeyPem(derived));

    const rsa = join(dir, 'rsa.pem');
    writeFileSync(
      rsa,
      generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'pem', type: 'pkcs8' }),
    );
    expect(() => resolveCheckpointKeys(loadConfig({ AUDIT_SIGNING_KEY: rsa }), secret)).toThrow(
      /holds a rsa key; the audit checkpoints need Ed25519/,
    );
    expect(() =>
      resolveCheckpointKeys(loadConfig({ AUDIT_SIGNING_KEY: join(dir, 'missing.pem') }), secret),
    ).toThrow(/AUDIT_SIGNING_KEY: cannot read .*missing\.pem \(ENOENT\)/);
  });
});
