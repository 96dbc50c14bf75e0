import { describe, expect, it } from 'vitest';
import { COMMAND_KINDS, helpText, parseCommand, usage } from '../bot/commands/command-parser.ts';
import { BadRequest } from '../bot/errors.ts';

/** Parses and returns the BadRequest thrown, failing the test when nothing is thrown. */
function refusal(text: string): BadRequest {
  try {
    parseCommand(text);
  } catch (e) {
    expect(e).toBeInstanceOf(BadRequest);
    return e as BadRequest;
  }
  throw new Error(`expected "${text.slice(0, 60)}" to be refused`);
}

describe('command parser: every command', () => {
  it('parses isolate with several hosts, a segment and every option', () => {
    expect(
      parseCommand(
        'isolate web-01 WEB-02 segment:dmz --reason "C2 beacon" --case IR-42 --note "seen by EDR" --ttl 2h',
      ),
    ).toEqual({
      kind: 'isolate',
      hosts: ['web-01', 'web-02'],
      segments: ['dmz'],
      reason: 'C2 beacon',
      caseId: 'IR-42',
      note: 'seen by EDR',
      ttlSeconds: 7200,
    });
  });

  it('parses unisolate', () => {
    expect(parseCommand('unisolate web-01 --reason=cleaned')).toMatchObject({
      kind: 'unisolate',
      hosts: ['web-01'],
      reason: 'cleaned',
    });
  });

  it('parses kill by pid and by process name', () => {
    expect(parseCommand('kill web-01 4242 --reason x')).toMatchObject({
      kind: 'kill',
      host: 'web-01',
      pid: 4242,
    });
    expect(parseCommand('kill web-01 "evil proc.exe" --reason x')).toMatchObject({
      kind: 'kill',
      processName: 'evil proc.exe',
    });
  });

  it('parses fetch with a Unix and a Windows path', () => {
    expect(parseCommand('fetch web-01 /tmp/x.bin')).toMatchObject({ kind: 'fetch', path: '/tmp/x.bin' });
    expect(parseCommand('fetch win-01 "C:\\Users\\a b\\x.exe"')).toMatchObject({
      path: 'C:\\Users\\a b\\x.exe',
    });
  });

  it('parses put with a library file and a destination', () => {
    expect(parseCommand('put web-01 fix.sh /opt/fix.sh --reason patch')).toMatchObject({
      kind: 'put',
      host: 'web-01',
      fileRef: 'fix.sh',
      destPath: '/opt/fix.sh',
    });
  });

  it('parses run with hosts, a segment and name=value parameters (quoted values keep spaces)', () => {
    expect(parseCommand("run collect-logs web-01 segment:prod since=24h pattern='a b' --case IR-1")).toEqual({
      kind: 'run',
      script: 'collect-logs',
      hosts: ['web-01'],
      segments: ['prod'],
      params: { since: '24h', pattern: 'a b' },
      caseId: 'IR-1',
    });
  });

  it('parses session, status, queue, cancel, audit, help, approve, deny and download', () => {
    expect(parseCommand('session start web-01 --reason triage')).toMatchObject({
      kind: 'session',
      action: 'start',
      host: 'web-01',
    });
    expect(parseCommand('session stop web-01')).toMatchObject({ action: 'stop' });
    expect(parseCommand('status')).toEqual({ kind: 'status' });
    expect(parseCommand('status r-7k3qxm')).toEqual({ kind: 'status', ref: 'R-7K3QXM' });
    expect(parseCommand('queue web-01')).toEqual({ kind: 'queue', host: 'web-01' });
    expect(parseCommand('cancel r-7k3qxm')).toEqual({ kind: 'cancel', target: 'R-7K3QXM' });
    expect(parseCommand('cancel 0b7c3a52-2f4e-4d7a-9a55-3c4b8f0e1d2a')).toMatchObject({ kind: 'cancel' });
    expect(parseCommand('audit web-01')).toEqual({ kind: 'audit', subject: 'web-01' });
    expect(parseCommand('audit')).toEqual({ kind: 'audit' });
    expect(parseCommand('help isolate')).toEqual({ kind: 'help', topic: 'isolate' });
    expect(parseCommand('approve R-7K3QXM')).toEqual({ kind: 'approve', ref: 'R-7K3QXM' });
    expect(parseCommand('deny R-7K3QXM --reason "not now"')).toEqual({
      kind: 'deny',
      ref: 'R-7K3QXM',
      reason: 'not now',
    });
    expect(parseCommand('download 0b7c3a52-2f4e-4d7a-9a55-3c4b8f0e1d2a')).toMatchObject({ kind: 'download' });
  });

  it('parses grant and revoke, accepting "ar" for active_response', () => {
    expect(parseCommand('grant alice ar')).toEqual({
      kind: 'grant',
      username: 'alice',
      role: 'active_response',
    });
    expect(parseCommand('revoke alice approver --reason left')).toEqual({
      kind: 'revoke',
      username: 'alice',
      role: 'approver',
      reason: 'left',
    });
    expect(refusal('grant alice root').message).toMatch(/"root" is not a role/);
  });
});

describe('command parser: chat framing and quoting', () => {
  it('strips a Slack mention, a Teams mention, an @name and a slash command word', () => {
    for (const prefix of ['<@U0123ABC> ', '<@U0123ABC|arbot> ', '<at>AR Bot</at> ', '@arbot ', '/ar ']) {
      expect(parseCommand(`${prefix}queue web-01`)).toEqual({ kind: 'queue', host: 'web-01' });
    }
  });

  it('folds typographic quotes and honours escaped quotes inside double quotes', () => {
    expect(parseCommand('isolate web-01 --reason “C2 beacon”')).toMatchObject({ reason: 'C2 beacon' });
    expect(parseCommand('isolate web-01 --reason "say \\"hi\\""')).toMatchObject({ reason: 'say "hi"' });
  });

  it('treats a quoted word starting with -- as a value, not an option', () => {
    expect(parseCommand('isolate web-01 --reason "--weird"')).toMatchObject({ reason: '--weird' });
  });

  it('refuses an unterminated quote', () => {
    expect(refusal('isolate web-01 --reason "C2').code).toBe('command.unterminated_quote');
  });
});

describe('command parser: bad input', () => {
  it('refuses an empty and an unknown command, listing the commands', () => {
    expect(refusal('   ').code).toBe('command.empty');
    const e = refusal('frobnicate web-01');
    expect(e.code).toBe('command.unknown');
    expect(e.message).toContain('"frobnicate"');
    expect(e.message).toContain('isolate');
  });

  it('names an unknown option and shows the usage line', () => {
    const e = refusal('isolate web-01 --reason x --force');
    expect(e.code).toBe('command.unknown_option');
    expect(e.message).toContain('--force');
    expect(e.message).toContain(`Usage: ${usage('isolate')}`);
  });

  it('refuses an option the command does not take, a repeated option and a missing value', () => {
    expect(refusal('queue web-01 --reason x').code).toBe('command.option_not_allowed');
    expect(refusal('isolate web-01 --reason a --reason b').code).toBe('command.duplicate_option');
    expect(refusal('isolate web-01 --reason').code).toBe('command.missing_option_value');
  });

  it('requires a reason for actions that change an endpoint', () => {
    for (const text of ['isolate web-01', 'unisolate web-01', 'kill web-01 12', 'put web-01 f /x']) {
      expect(refusal(text).code).toBe('command.reason_required');
    }
  });

  it('refuses missing and extra arguments with the usage line', () => {
    const e = refusal('kill web-01 --reason x');
    expect(e.code).toBe('command.missing_argument');
    expect(e.message).toContain(usage('kill'));
    expect(refusal('queue web-01 web-02').code).toBe('command.extra_argument');
    expect(refusal('session pause web-01').code).toBe('command.bad_argument');
  });

  it('refuses invalid hostnames per RFC 1123, quoting what was typed', () => {
    expect(refusal('isolate web_01 --reason x').message).toContain('"web_01" is not a valid hostname');
    expect(refusal(`isolate ${'a'.repeat(64)}.example --reason x`).code).toBe('command.invalid');
    expect(refusal(`isolate ${Array(64).fill('abcd').join('.')} --reason x`).code).toBe('command.invalid');
    expect(refusal('isolate -web --reason x').code).toBe('command.invalid');
  });

  it('refuses bad case ids, relative paths, bad refs, bad params and out-of-range ttls', () => {
    expect(refusal('isolate web-01 --reason x --case "IR 42"').message).toContain('caseId');
    expect(refusal(`isolate web-01 --reason x --case ${'A'.repeat(65)}`).code).toBe('command.invalid');
    expect(refusal('fetch web-01 etc/passwd').message).toContain('not an absolute path');
    expect(refusal('approve R-12').message).toContain('is not a request reference');
    expect(refusal('run s web-01 Bad=1').code).toBe('command.invalid');
    expect(refusal('run s web-01 a=1 a=2').code).toBe('command.duplicate_param');
    expect(refusal('isolate web-01 --reason x --ttl 30s').code).toBe('command.bad_ttl');
    expect(refusal('isolate web-01 --reason x --ttl 31d').code).toBe('command.bad_ttl');
    expect(refusal('isolate web-01 --reason x --ttl soon').message).toContain('"soon"');
  });

  it('caps the whole text at 20 KB, a reason at 2,000 characters and hosts at 1,000', () => {
    expect(refusal(`isolate web-01 --reason "${'x'.repeat(1024 * 1024)}"`).code).toBe('command.too_long');
    expect(refusal(`isolate web-01 --reason "${'x'.repeat(2001)}"`).message).toMatch(/reason: is too long/);
    const hosts = Array.from({ length: 1001 }, (_, i) => `h${i}`).join(' ');
    expect(refusal(`isolate ${hosts} --reason x`).message).toMatch(/at most 1000 hosts/);
    const many = Array.from({ length: 100_000 }, (_, i) => `h${i}`).join(' ');
    expect(refusal(`isolate ${many} --reason x`).code).toBe('command.too_long');
  });

  it('caps run parameters at 50 and each value at 4 KB', () => {
    const params = Array.from({ length: 51 }, (_, i) => `p${i}=1`).join(' ');
    expect(refusal(`run s web-01 ${params}`).code).toBe('command.too_many_params');
    expect(refusal(`run s web-01 a=${'x'.repeat(4097)}`).message).toContain('at most 4096 bytes');
  });
});

describe('usage and help', () => {
  it('has a usage line for every command and lists them all in help', () => {
    const help = helpText();
    for (const kind of COMMAND_KINDS) {
      expect(usage(kind).startsWith(kind)).toBe(true);
      expect(help).toContain(usage(kind));
    }
  });

  it('explains one command, and says when the topic is unknown', () => {
    expect(helpText('kill')).toContain('kill <host> <pid|process-name>');
    expect(helpText('nope')).toMatch(/There is no command "nope"/);
  });
});
