// The libraries in chat: `files` (what `put` can push), `scripts` (what `run` can name, with parameters) and
// `upload` (a link to the page that adds a file, after a step-up).
import type { BotDeps } from '../bot-service.ts';
import { requireLibraryEditor } from '../library/file-library.ts';
import type { ChatContext } from '../ports.ts';
import { describeParams } from '../scripts/script-params.ts';
import type { ResolvedUser } from '../users/user-types.ts';

const MAX_LISTED = 50;

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** `domain=<string, required, pattern ^[a-z.]+$>` — what a person types after `run <script> <host>`. */
export const describeScriptParams = describeParams;

export function createLibraryHandlers(deps: BotDeps) {
  const { chat, policy, stepup, library, scripts } = deps;

  return {
    async files(ctx: ChatContext, user: ResolvedUser) {
      policy.requireRequester(user);
      const rows = await library.list();
      if (!rows.length) {
        await chat.reply(ctx, 'The file library is empty. Type "upload" to add a file (or ask an admin).');
        return;
      }
      const lines = rows
        .slice(0, MAX_LISTED)
        .map(
          (f) =>
            `• ${f.name} — ${bytes(f.size)}, sha256 ${f.sha256}, added ${f.createdAt.toISOString().slice(0, 10)}${f.addedBy ? ` by ${f.addedBy}` : ''}`,
        );
      if (rows.length > MAX_LISTED) lines.push(`… and ${rows.length - MAX_LISTED} more`);
      await chat.reply(
        ctx,
        [`Library files (push one with: put <host> <name> <dest-path> --reason "<why>"):`, ...lines].join(
          '\n',
        ),
      );
    },

    async scripts(ctx: ChatContext, user: ResolvedUser) {
      policy.requireRequester(user);
      const rows = await scripts.list();
      if (!rows.length) {
        await chat.reply(
          ctx,
          'The script library is empty; an admin adds scripts with the CLI (script add).',
        );
        return;
      }
      const lines = rows
        .slice(0, MAX_LISTED)
        .flatMap((s) => [
          `• ${s.name} v${s.version}${s.builtin ? ' [built-in]' : ''} (sha256 ${s.sha256.slice(0, 12)}…, time limit ${s.timeoutSeconds} s) — ${s.readOnly ? `read-only, no approval needed on up to ${policy.config.readOnlyApprovalAbove} endpoints` : 'changes endpoints, needs approval'}; ${s.oses.join(', ')}; agent ${s.minAgentVersion} or newer${s.description ? `\n    ${s.description}` : ''}`,
          `    parameters: ${describeScriptParams(s.paramsSchema)}`,
        ]);
      await chat.reply(
        ctx,
        [`Scripts (run one with: run <script> <host...> [name=value ...]):`, ...lines].join('\n'),
      );
    },

    async upload(ctx: ChatContext, user: ResolvedUser) {
      requireLibraryEditor(user);
      const link = await stepup.createChallenge({ userId: user.id, purpose: 'upload', subject: 'library' });
      await chat.notifyPrivately(
        ctx,
        `Add a file to the library: ${link.url}\nConfirm with your password and authenticator code, then choose the file. The link is single-use and expires at ${link.expiresAt.toISOString()}.`,
      );
    },
  };
}
