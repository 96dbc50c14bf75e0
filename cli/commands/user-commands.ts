import { randomBytes } from 'node:crypto';
import QRCode from 'qrcode';
import { ROLES, type Role } from '../../db/schema.ts';
import type { CliContext } from '../cli-context.ts';
import { CliUsageError, type CommandGroup, cliArgs } from '../cli-types.ts';

async function readPasswordFromStdin(ctx: CliContext): Promise<string> {
  const line = await ctx.io.readLine();
  if (line) return line;
  throw new CliUsageError('--password-stdin was given but standard input was empty.', 'user add ...');
}

function role(text: string, usage: string): Role {
  const r = text === 'ar' ? 'active_response' : text;
  if (!(ROLES as readonly string[]).includes(r))
    throw new CliUsageError(`"${text}" is not a role; roles are ${ROLES.join(', ')}.`, usage);
  return r as Role;
}

export const userCommands: CommandGroup = {
  summary: 'users, chat identities and MFA',
  commands: {
    add: {
      summary: 'create a user (prints a generated password unless --password-stdin)',
      args: '<username> --name "Full Name" [--email e] [--org name] [--password-stdin]',
      async run(ctx, argv) {
        const usage = 'user add <username> --name "Full Name" [--email e] [--org name] [--password-stdin]';
        const { values, positionals } = cliArgs(argv, usage, 1, {
          name: { type: 'string' },
          email: { type: 'string' },
          org: { type: 'string' },
          'password-stdin': { type: 'boolean' },
        });
        const generated = !values['password-stdin'];
        const password = generated ? randomBytes(15).toString('base64url') : await readPasswordFromStdin(ctx);
        const user = await ctx.users.createUser({
          username: positionals[0]!,
          displayName: values.name ?? positionals[0]!,
          email: values.email,
          password,
          orgName: values.org,
        });
        ctx.out(`Created ${user.username} (${user.id}) in ${user.orgName}.`);
        if (generated) ctx.out(`Password (shown once): ${password}`);
        ctx.out(`Next: npm run cli -- user totp-enroll ${user.username}`);
      },
    },
    list: {
      summary: 'list users with roles and MFA state',
      async run(ctx) {
        for (const u of await ctx.users.listUsers()) {
          ctx.out(
            `${u.username.padEnd(20)} ${u.orgName.padEnd(14)} mfa:${u.mfaEnrolled ? 'yes' : 'no '} ${u.disabled ? 'DISABLED ' : ''}roles:${u.roles.join(',') || '-'}`,
          );
        }
      },
    },
    link: {
      summary: 'link a chat identity (slack|teams|console, team/tenant id, user id) to a user',
      args: '<username> <platform> <tenant-id> <chat-user-id>',
      async run(ctx, argv) {
        const { positionals } = cliArgs(
          argv,
          'user link <username> <platform> <tenant-id> <chat-user-id>',
          4,
          {},
        );
        const user = await ctx.users.getUser(positionals[0]!);
        await ctx.users.linkChatIdentity({
          userId: user.id,
          platform: positionals[1]!,
          tenantId: positionals[2]!,
          chatUserId: positionals[3]!,
        } as never);
        ctx.out(`Linked ${positionals[1]}:${positionals[2]}:${positionals[3]} to ${user.username}.`);
      },
    },
    'totp-enroll': {
      summary:
        'start TOTP enrolment: prints the otpauth URI and a terminal QR code (or --link for a web link)',
      args: '<username> [--link]',
      async run(ctx, argv) {
        const { values, positionals } = cliArgs(argv, 'user totp-enroll <username> [--link]', 1, {
          link: { type: 'boolean' },
        });
        const user = await ctx.users.getUser(positionals[0]!);
        if (values.link) {
          const link = await ctx.stepup.createChallenge({
            userId: user.id,
            purpose: 'enrol_totp',
            subject: user.id,
          });
          ctx.out(
            `Send ${user.username} this single-use enrolment link (it asks for their password, then shows the key; expires ${link.expiresAt.toISOString()}):\n${link.url}`,
          );
          return;
        }
        const { secret, otpauthUri } = await ctx.stepup.startTotpEnrolment(user.id);
        ctx.out(await QRCode.toString(otpauthUri, { type: 'terminal', small: true }));
        ctx.out(`otpauth URI: ${otpauthUri}`);
        ctx.out(`Secret: ${secret}`);
        ctx.out(`Confirm with a code from the app: npm run cli -- user totp-confirm ${user.username} <code>`);
      },
    },
    'totp-confirm': {
      summary: 'finish TOTP enrolment with one code from the authenticator app',
      args: '<username> <code>',
      async run(ctx, argv) {
        const { positionals } = cliArgs(argv, 'user totp-confirm <username> <code>', 2, {});
        const user = await ctx.users.getUser(positionals[0]!);
        await ctx.stepup.confirmTotpEnrolment(user.id, positionals[1]!);
        ctx.out(`MFA enrolled for ${user.username}.`);
      },
    },
    disable: {
      summary: 'disable a user (they can no longer act or approve)',
      args: '<username>',
      async run(ctx, argv) {
        const { positionals } = cliArgs(argv, 'user disable <username>', 1, {});
        const user = await ctx.users.getUser(positionals[0]!);
        await ctx.users.disableUser({ userId: user.id });
        ctx.out(`Disabled ${user.username}.`);
      },
    },
    'role-grant': {
      summary: 'grant a role',
      args: '<username> <active_response|approver|admin>',
      async run(ctx, argv) {
        const usage = 'role grant <username> <active_response|approver|admin>';
        const { positionals } = cliArgs(argv, usage, 2, {});
        const user = await ctx.users.getUser(positionals[0]!);
        await ctx.users.grantRole({ userId: user.id, role: role(positionals[1]!, usage) });
        ctx.out(`Granted ${positionals[1]} to ${user.username}.`);
      },
    },
    'role-revoke': {
      summary: 'revoke a role',
      args: '<username> <active_response|approver|admin>',
      async run(ctx, argv) {
        const usage = 'role revoke <username> <active_response|approver|admin>';
        const { positionals } = cliArgs(argv, usage, 2, {});
        const user = await ctx.users.getUser(positionals[0]!);
        await ctx.users.revokeRole({ userId: user.id, role: role(positionals[1]!, usage) });
        ctx.out(`Revoked ${positionals[1]} from ${user.username}.`);
      },
    },
  },
};
