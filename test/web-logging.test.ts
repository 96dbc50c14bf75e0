// No link token reaches the log, whatever shape the URL takes. Routes for links log quietly, but a URL that
// matches no route (a trailing slash, an extra segment, other letter case) went through Fastify's 404 path
// and was logged at info with the token in it; the app's serializers now scrub every such line.
import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { scrubText, scrubUrl } from '../app/http-logging.ts';
import { drivers } from './helpers/db.ts';
import { createWebFixture } from './helpers/web-stepup.ts';

function capture() {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      lines.push(String(chunk));
      cb();
    },
  });
  return { logger: pino({ level: 'trace' }, sink), text: () => lines.join('') };
}

describe('scrubUrl', () => {
  it('hides everything after a link prefix, token-like segments anywhere, and the query', () => {
    const t = 'Ab3_dEf-Gh1JkLmNoPqRsT';
    expect(scrubUrl(`/stepup/${t}`)).toBe('/stepup/[redacted]');
    expect(scrubUrl(`/stepup/${t}/`)).toBe('/stepup/[redacted]/');
    expect(scrubUrl(`/enrol/${t}/x`)).toBe('/enrol/[redacted]/[redacted]');
    expect(scrubUrl(`/STEPUP/abc`)).toBe('/STEPUP/[redacted]');
    expect(scrubUrl(`/%73tepup/abc`)).toBe('/%73tepup/[redacted]');
    expect(scrubUrl(`//stepup//${t}`)).toBe('//stepup//[redacted]');
    expect(scrubUrl(`/other/${t}`)).toBe('/other/[redacted]');
    expect(scrubUrl('/history?user=alice&token=x')).toBe('/history?…');
    expect(scrubUrl('/healthz')).toBe('/healthz');
    expect(scrubUrl('/assets/stepup.css')).toBe('/assets/stepup.css');
  });

  it('scrubs link paths quoted in error messages', () => {
    expect(scrubText('Route GET:/stepup/abc/ not found')).toBe('Route GET:/stepup/[redacted] not found');
  });
});

describe.each(drivers)('HTTP log on %s', (driver) => {
  it('writes no link token for any shape of link URL, while still logging the requests', async () => {
    const log = capture();
    const f = await createWebFixture(driver, { logger: log.logger });
    try {
      const u = await f.makeUser('vera');
      const stepupToken = await f.link(u, 'approve', 'digest');
      const enrolToken = await f.link(await f.makeUser('walt', { enrol: false }), 'enrol_totp', 'enrol');
      const urls = [
        `/stepup/${stepupToken}`,
        `/stepup/${stepupToken}/`,
        `/stepup/${stepupToken}?from=chat`,
        `/STEPUP/${stepupToken}/`,
        `//stepup/${stepupToken}`,
        `/%73tepup/${stepupToken}/`,
        `/enrol/${enrolToken}`,
        `/enrol/${enrolToken}/`,
        `/enrol/${enrolToken}/x`,
        `/files/${stepupToken}/`,
      ];
      for (const url of urls) {
        await f.app.inject({ method: 'GET', url });
        await f.app.inject({
          method: 'POST',
          url,
          payload: 'password=x',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
        });
      }
      const text = log.text();
      expect(text).not.toContain(stepupToken);
      expect(text).not.toContain(enrolToken);
      // The unmatched URLs were logged, with the token taken out.
      expect(text).toContain('/stepup/[redacted]/');
      expect(text).toContain('/enrol/[redacted]/[redacted]');
      expect(text).toMatch(/Route GET:\/stepup\/\[redacted\]\/ not found/);
    } finally {
      await f.close();
    }
  });
});
