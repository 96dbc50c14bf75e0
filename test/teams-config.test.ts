// The Teams settings in the one configuration schema: on only when the id, secret and tenant are all set,
// a half configuration named rather than ignored, and no URL the bot's secret travels to in clear text.
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../app/config.ts';

const ID = '5c1f0a4e-7b7e-4d7c-9a43-0e2f5d3b8a11';
const TENANT = '9f3b2c1d-0a4e-4b5f-8c6d-7e8f9a0b1c2d';
const full = { TEAMS_CLIENT_ID: ID, TEAMS_CLIENT_SECRET: 's3cr3t-value', TEAMS_TENANT_ID: TENANT };

describe('Teams configuration', () => {
  it('is off by default and on when the client id, secret and tenant are set', () => {
    expect(loadConfig({}).teamsEnabled).toBe(false);
    const c = loadConfig(full);
    expect(c.teamsEnabled).toBe(true);
    expect(c.TEAMS_CLOUD).toBe('Public');
  });

  it('names what is missing from a half configuration, without echoing the secret', () => {
    let message = '';
    try {
      loadConfig({ TEAMS_CLIENT_ID: ID, TEAMS_CLIENT_SECRET: 's3cr3t-value' });
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(
      /TEAMS_TENANT_ID is missing: Teams needs TEAMS_CLIENT_ID, TEAMS_CLIENT_SECRET, TEAMS_TENANT_ID together/,
    );
    expect(message).not.toContain('s3cr3t-value');
  });

  it('refuses ids that are not GUIDs, an unknown cloud, and an audit conversation without Teams', () => {
    expect(() => loadConfig({ ...full, TEAMS_CLIENT_ID: 'my-bot' })).toThrow(
      /TEAMS_CLIENT_ID must be the Entra application \(client\) id, a GUID/,
    );
    expect(() => loadConfig({ ...full, TEAMS_CLOUD: 'Mars' })).toThrow(
      /TEAMS_CLOUD must be one of Public, USGov, USGovDoD, China/,
    );
    expect(loadConfig({ ...full, TEAMS_CLOUD: 'usgov' }).TEAMS_CLOUD).toBe('USGov');
    expect(() => loadConfig({ TEAMS_AUDIT_CONVERSATION: '19:audit@thread.tacv2' })).toThrow(
      /TEAMS_AUDIT_CONVERSATION is set but Teams is not configured/,
    );
    expect(() => loadConfig({ ...full, TEAMS_AUDIT_CONVERSATION: 'general' })).toThrow(
      /TEAMS_AUDIT_CONVERSATION must be a channel conversation id/,
    );
  });

  it('sends the secret and the token only over https, or plain http on loopback', () => {
    expect(() => loadConfig({ ...full, TEAMS_LOGIN_ENDPOINT: 'http://login.example.com' })).toThrow(
      /TEAMS_LOGIN_ENDPOINT must be an https:\/\/ URL/,
    );
    expect(loadConfig({ ...full, TEAMS_LOGIN_ENDPOINT: 'http://127.0.0.1:3979/' }).TEAMS_LOGIN_ENDPOINT).toBe(
      'http://127.0.0.1:3979',
    );
    expect(() =>
      loadConfig({ ...full, TEAMS_SERVICE_URL_HOSTS: 'smba.trafficmanager.net, not a host' }),
    ).toThrow(/TEAMS_SERVICE_URL_HOSTS has "not a host"/);
  });

  it('needs a service URL for the China cloud, which has no built-in one', () => {
    expect(() => loadConfig({ ...full, TEAMS_CLOUD: 'China' })).toThrow(
      /TEAMS_SERVICE_URL is needed with TEAMS_CLOUD=China/,
    );
  });
});
