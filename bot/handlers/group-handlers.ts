// `groups [--mine] [--state <state>]`: the newest action groups in chat, with a pointer to the web page that
// pages and filters them all.
import type { BotDeps } from '../bot-service.ts';
import type { Command } from '../commands/command-types.ts';
import { groupAction, listGroups } from '../groups/group-list.ts';
import type { ChatContext } from '../ports.ts';
import { visibleOrgOf } from '../requests/request-access.ts';
import type { ResolvedUser } from '../users/user-types.ts';

const SHOWN = 15;

export function createGroupHandlers(deps: BotDeps) {
  return {
    async list(ctx: ChatContext, user: ResolvedUser, cmd: Extract<Command, { kind: 'groups' }>) {
      deps.policy.requireRequester(user);
      const { items, total } = await listGroups(deps.db, {
        requesterId: cmd.mine ? user.id : undefined,
        state: cmd.state,
        visibleToOrg: visibleOrgOf(user),
        limit: SHOWN,
      });
      const which = [cmd.mine ? 'yours' : '', cmd.state ?? ''].filter(Boolean).join(', ');
      if (!items.length) {
        await deps.chat.reply(ctx, `No action groups${which ? ` (${which})` : ''}.`);
        return;
      }
      const lines = items.map((g) => {
        const approved = g.approvers.length ? `, approved by ${g.approvers.join(', ')}` : '';
        const extra = [g.caseId ? `case ${g.caseId}` : '', g.note ? `note: ${g.note.slice(0, 80)}` : '']
          .filter(Boolean)
          .join(' · ');
        const at = g.createdAt.toISOString().slice(0, 16).replace('T', ' ');
        return `  ${g.ref} ${groupAction(g)} on ${g.targets} endpoints${g.excluded ? ` (${g.excluded} excluded)` : ''} — ${g.state} · by ${g.requester}${approved}${extra ? ` · ${extra}` : ''} · ${at} UTC`;
      });
      const more =
        total > items.length ? `\n  … ${total - items.length} more on the Action Groups page.` : '';
      await deps.chat.reply(
        ctx,
        `Action groups${which ? ` (${which})` : ''}, newest first (status <ref> for one):\n${lines.join('\n')}${more}`,
      );
    },
  };
}
