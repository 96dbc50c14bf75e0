import { ROLES } from '../../db/schema.ts';
import { type CommandGroup, cliArgs } from '../cli-types.ts';

export const orgCommands: CommandGroup = {
  summary: 'organisations (in-house and external MDR providers) and their chat tenants',
  commands: {
    add: {
      summary: 'add an organisation; --external for an MDR provider, --roles limits what members may hold',
      args: '<name> [--external] [--roles active_response,approver]',
      async run(ctx, argv) {
        const { values, positionals } = cliArgs(argv, 'org add <name> [--external] [--roles a,b]', 1, {
          external: { type: 'boolean' },
          roles: { type: 'string' },
        });
        const allowedRoles = (values.roles ?? (values.external ? 'active_response' : ROLES.join(',')))
          .split(',')
          .map((r) => r.trim())
          .filter(Boolean);
        await ctx.users.createOrganization({
          name: positionals[0]!,
          external: Boolean(values.external),
          allowedRoles: allowedRoles as never,
        });
        ctx.out(
          `Added ${values.external ? 'external ' : ''}organisation ${positionals[0]} (roles: ${allowedRoles.join(', ')}).`,
        );
      },
    },
    'map-tenant': {
      summary: 'map a Slack team id or Teams tenant id to an organisation (home is the in-house one)',
      args: '<org> <slack|teams|console> <tenant-id>',
      async run(ctx, argv) {
        const { positionals } = cliArgs(
          argv,
          'org map-tenant <org> <slack|teams|console> <tenant-id>',
          3,
          {},
        );
        await ctx.users.mapTenant({
          orgName: positionals[0]!,
          platform: positionals[1]!,
          tenantId: positionals[2]!,
        });
        ctx.out(`Mapped ${positionals[1]} tenant ${positionals[2]} to ${positionals[0]}.`);
      },
    },
  },
};
