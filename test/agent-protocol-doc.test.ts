// docs/agent-protocol.md is the contract an agent in another language is written from: these checks keep it
// from drifting away from the definitions both sides import (frames, error and close codes, the catalogue).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { ENROLMENT_REFUSALS } from '../broker/enrolment/enrolment-service.ts';
import { ACTION_NAMES, ACTIONS } from '../protocol/actions.ts';
import * as frames from '../protocol/frames.ts';
import { ROOT } from './helpers/agents.ts';

const doc = readFileSync(join(ROOT, 'docs/agent-protocol.md'), 'utf8');
const source = (f: string) => readFileSync(join(ROOT, f), 'utf8');

/** The rows of the markdown table that follows `heading`, as arrays of cells. */
function table(heading: string): string[][] {
  const start = doc.indexOf(heading);
  expect(start, `heading "${heading}"`).toBeGreaterThanOrEqual(0);
  const rows: string[][] = [];
  for (const line of doc.slice(start).split('\n').slice(1)) {
    if (!line.startsWith('|')) {
      if (rows.length) break;
      continue;
    }
    rows.push(
      line
        .slice(1, -1)
        .split(' | ')
        .map((c) => c.replace(/^\| ?| ?\|$/g, '').trim()),
    );
  }
  return rows.slice(2);
}

/** The text of `name = z.strictObject( ... )` in the document's schemas, up to its closing parenthesis. */
function documented(name: string): string {
  const m = new RegExp(`^${name.replace(/[()]/g, '\\$&')}\\s*=\\s*z\\.strictObject\\(`, 'm').exec(doc);
  expect(m, `a schema for ${name}`).not.toBeNull();
  let depth = 0;
  for (let i = m!.index + m![0].length - 1; i < doc.length; i++) {
    if (doc[i] === '(') depth++;
    if (doc[i] === ')' && --depth === 0) return doc.slice(m!.index, i + 1);
  }
  throw new Error(`unbalanced schema for ${name}`);
}

describe('docs/agent-protocol.md', () => {
  it('states the protocol version the code speaks', () => {
    expect(doc).toMatch(new RegExp(`^# Agent protocol, version ${frames.PROTOCOL_VERSION}$`, 'm'));
    expect(documented('hello')).toContain(`v: z.literal(${frames.PROTOCOL_VERSION})`);
    expect(documented('welcome')).toContain(`v: z.literal(${frames.PROTOCOL_VERSION})`);
  });

  it('quotes every field of every frame', () => {
    const schemas: [string, z.ZodObject][] = [
      ['hello', frames.helloFrame],
      ['ack', frames.ackFrame],
      ['progress', frames.progressFrame],
      ['result', frames.resultFrame],
      ['file_start', frames.uploadStartFrame],
      ['file_end', frames.fileEndFrame],
      ['file_abort', frames.fileAbortFrame],
      ['file_get', frames.fileGetFrame],
      ['ping', frames.pingFrame],
      ['welcome', frames.welcomeFrame],
      ['delivery', frames.deliveryFrame],
      ['proceed', frames.proceedFrame],
      ['file_start (download)', frames.downloadStartFrame],
      ['file_stored', frames.fileStoredFrame],
      ['error', frames.errorFrame],
      ['pong', frames.pongFrame],
    ];
    for (const [name, schema] of schemas) {
      const text = documented(name);
      for (const key of Object.keys(schema.shape)) {
        expect(text, `${name}.${key}`).toMatch(new RegExp(`\\b${key}\\b`));
      }
    }
  });

  it('lists every error code with when it is sent, and no other', () => {
    const documentedCodes = table('## 6. Error codes').flatMap((r) => r[0]!.match(/`[a-z_.]+`/g) ?? []);
    expect(documentedCodes.map((c) => c.slice(1, -1)).sort()).toEqual(
      Object.values(frames.ERROR_CODES).sort(),
    );
  });

  it('lists every close code the broker uses', () => {
    const rows = table('### Close codes used by the broker').map((r) => Number(r[0]));
    expect(rows.sort()).toEqual([...Object.values(frames.CLOSE_CODES), 1008, 1009].sort());
  });

  it('gives each action the OSes and minimum agent version of the catalogue', () => {
    const rows = table('### 5.1 Actions');
    expect(rows.map((r) => r[0]!.replaceAll('`', ''))).toEqual([...ACTION_NAMES]);
    for (const [name, oses, min] of rows) {
      const def = ACTIONS[name!.replaceAll('`', '') as keyof typeof ACTIONS];
      expect(oses, name).toBe(def.oses.join(', '));
      expect(min, name).toBe(def.minAgentVersion);
    }
  });

  it('states the clock tolerance for expired deliveries and the reasons an agent refuses one', () => {
    expect(doc).toContain(`**${frames.DELIVERY_CLOCK_SKEW_MS / 60_000} minutes**`);
    for (const r of frames.AGENT_REFUSALS) expect(doc).toContain(`'${r}'`);
  });

  it('lists every enrolment error code', () => {
    const documentedCodes = table('### 2.4 Errors').flatMap((r) => r[1]!.match(/`enrol\.[a-z_]+`/g) ?? []);
    const httpCodes = [...source('broker/gateway/enrol-http.ts').matchAll(/'(enrol\.[a-z_]+)'/g)].map(
      (m) => m[1],
    );
    const expected = new Set([...ENROLMENT_REFUSALS.map((r) => `enrol.${r}`), ...httpCodes]);
    expect(documentedCodes.map((c) => c.slice(1, -1)).sort()).toEqual([...expected].sort());
  });
});
