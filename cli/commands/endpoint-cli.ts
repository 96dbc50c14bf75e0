import { join } from 'node:path';
import { readCaCertificatePem } from '../../broker/pki/pki.ts';
import { CliUsageError, type CommandGroup, cliArgs } from '../cli-types.ts';
import { enrollToken, listEndpoints, revokeEndpoint } from './endpoint-commands.ts';

export const endpointCommands: CommandGroup = {
  summary: 'enrolled endpoints and agent enrolment',
  commands: {
    list: {
      summary: 'list endpoints with OS, agent version, segment, presence and isolation',
      async run(ctx) {
        const rows = await listEndpoints({ db: ctx.db });
        if (!rows.length)
          ctx.out('No endpoints enrolled yet. Create a token with: endpoint enroll-token --segment <name>');
        for (const e of rows) {
          const presence = e.revokedAt
            ? 'REVOKED'
            : e.brokerId
              ? 'online'
              : `offline${e.lastSeenAt ? ` since ${e.lastSeenAt.toISOString()}` : ''}`;
          ctx.out(
            `${e.hostname.padEnd(24)} ${`${e.os} ${e.osVersion}`.padEnd(20)} agent ${e.agentVersion.padEnd(8)} ${e.segment.padEnd(14)} ${e.isolated ? 'ISOLATED ' : ''}${presence}`,
          );
        }
      },
    },
    'enroll-token': {
      summary: 'create a single-use, expiring agent enrolment token for a segment',
      args: '--segment <name> [--ttl 24h]',
      async run(ctx, argv) {
        const usage = 'endpoint enroll-token --segment <name> [--ttl 24h]';
        const { values } = cliArgs(argv, usage, 0, { segment: { type: 'string' }, ttl: { type: 'string' } });
        if (!values.segment) throw new CliUsageError('--segment is required.', usage);
        const t = await enrollToken({
          db: ctx.db,
          audit: ctx.audit,
          clock: ctx.clock,
          segment: values.segment,
          ttl: values.ttl ?? '24h',
          caCertPem: readCaCertificatePem(join(ctx.config.DATA_DIR, 'pki')),
        });
        ctx.out(
          `Enrolment token for segment ${values.segment} (single use, expires ${t.expiresAt.toISOString()}):\n${t.token}`,
        );
        ctx.out(
          `On the endpoint: npm run agent -- --enroll ${t.token} --broker wss://${ctx.config.BROKER_PUBLIC_HOST}:${ctx.config.BROKER_PORT}`,
        );
      },
    },
    revoke: {
      summary: "revoke an endpoint's certificate; its agent is disconnected and refused",
      args: '<hostname>',
      async run(ctx, argv) {
        const { positionals } = cliArgs(argv, 'endpoint revoke <hostname>', 1, {});
        await revokeEndpoint({ db: ctx.db, audit: ctx.audit, clock: ctx.clock, hostname: positionals[0]! });
        ctx.out(`Revoked ${positionals[0]}. Its agent can no longer connect; re-enrol it with a new token.`);
      },
    },
  },
};
