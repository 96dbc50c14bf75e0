// `groups [--mine] [--state <state>]` in chat: the action groups (requests with more than one target),
// newest first, with who scheduled and approved them, their case and note, filtered by requester and state.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseCommand } from '../bot/commands/command-parser.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { buildTestPlatform, type TestPlatform } from './helpers/platform.ts';

describe('groups command grammar', () => {
  it('takes --mine as a flag and --state with a value, and refuses an unknown state', () => {
    expect(parseCommand('groups --mine --state running')).toEqual({
      kind: 'groups',
      mine: true,
      state: 'running',
    });
    expect(() => parseCommand('groups --state bogus')).toThrow(/not a group state/);
  });
});

describe.each(drivers)('groups in chat (%s)', { timeout: 180_000 }, (driver) => {
  let tdb: TestDatabase;
  let tp: TestPlatform;

  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
    tp = await buildTestPlatform(tdb);
    await tp.person('ana', ['active_response']);
    await tp.person('bob', ['active_response']);
    for (const h of ['web-01', 'web-02', 'web-03']) await tp.endpoint(h);
  }, 180_000);
  afterEach(async () => {
    await tdb?.destroy();
  });

  const lastReply = () => tp.chat.transcript.filter((m) => m.kind === 'reply').at(-1)!.text;

  it('lists groups newest first, only mine with --mine, and by state', async () => {
    await tp.say('ana', 'processes web-01 web-02 --case IR-1 --note "first sweep"');
    tp.clock.advance(1000);
    await tp.say('bob', 'processes segment:servers --case IR-2');
    await tp.say('ana', 'processes web-03');
    await tp.say('ana', 'groups');
    const all = lastReply();
    const lines = all.split('\n').slice(1);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/R-\w{6} processes on 3 endpoints — running · by bob · case IR-2/);
    expect(lines[1]).toMatch(
      /R-\w{6} processes on 2 endpoints — running · by ana · case IR-1 · note: first sweep/,
    );
    await tp.say('ana', 'groups --mine');
    expect(lastReply().split('\n').slice(1)).toHaveLength(1);
    expect(lastReply()).toContain('by ana');
    await tp.say('ana', 'groups --state halted');
    expect(lastReply()).toBe('No action groups (halted).');
  });
});
