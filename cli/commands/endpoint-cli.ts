import { join } from 'node:path';
import { brokerUrl, readBrokerUrl } from '../../broker/pki/broker-url.ts';
import { readCaCertificatePem } from '../../broker/pki/pki.ts';
import type { CliContext } from '../cli-context.ts';
import { CliUsageError, type CommandGroup, cliArgs } from '../cli-types.ts';
import {
  enrollToken,
  listEndpoints,
  reenrollToken,
  revokeEndpoint,
  unrevokeEndpoint,
} from './endpoint-commands.ts';

/**
 * What the agent needs besides the token: the CA (for the pin) and the broker's URL, both as the broker
 * itself wrote them under DATA_DIR/pki when it last started. Before the first start there is neither.
 */
function brokerFacts(ctx: CliContext) {
  const pkiDir = join(ctx.config.DATA_DIR, 'pki');
  return {
    caCertPem: readCaCertificatePem(pkiDir),
    url: readBrokerUrl(pkiDir) ?? brokerUrl(ctx.config.BROKER_PUBLIC_HOST, ctx.config.BROKER_PORT),
  };
}

function printAgentHint(ctx: CliContext, token: string, facts: ReturnType<typeof brokerFacts>, extra = '') {
  ctx.out(`On the endpoint: npm run agent -- --enroll ${token} --broker ${facts.url}${extra}`);
  if (!facts.caCertPem) {
    ctx.out(
      'Warning: no broker has started with this DATA_DIR yet, so the token carries no CA pin and the agent ' +
        "will trust the broker's CA on first use. Start the server once, then make the token again.",
    );
  }
}

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
      summary: 'create a single-use, expiring token that enrols one new endpoint into a segment',
      args: '--segment <name> [--ttl 24h]',
      async run(ctx, argv) {
        const usage = 'endpoint enroll-token --segment <name> [--ttl 24h]';
        const { values } = cliArgs(argv, usage, 0, { segment: { type: 'string' }, ttl: { type: 'string' } });
        if (!values.segment) throw new CliUsageError('--segment is required.', usage);
        const facts = brokerFacts(ctx);
        const t = await enrollToken({
          db: ctx.db,
          audit: ctx.audit,
          clock: ctx.clock,
          segment: values.segment,
          ttl: values.ttl ?? '24h',
          caCertPem: facts.caCertPem,
        });
        ctx.out(
          `Enrolment token for a new endpoint in segment ${values.segment} (single use, expires ${t.expiresAt.toISOString()}):\n${t.token}`,
        );
        printAgentHint(ctx, t.token, facts);
      },
    },
    'reenroll-token': {
      summary:
        'create a single-use token that re-enrols one existing endpoint (new key, same name and segment)',
      args: '<hostname> [--ttl 24h]',
      async run(ctx, argv) {
        const usage = 'endpoint reenroll-token <hostname> [--ttl 24h]';
        const { values, positionals } = cliArgs(argv, usage, 1, { ttl: { type: 'string' } });
        const facts = brokerFacts(ctx);
        const t = await reenrollToken({
          db: ctx.db,
          audit: ctx.audit,
          clock: ctx.clock,
          hostname: positionals[0]!,
          ttl: values.ttl ?? '24h',
          caCertPem: facts.caCertPem,
        });
        ctx.out(
          `Re-enrolment token for ${t.hostname} only (single use, expires ${t.expiresAt.toISOString()}):\n${t.token}`,
        );
        printAgentHint(ctx, t.token, facts, ` --hostname ${t.hostname} --reenroll`);
        if (t.revoked) {
          ctx.out(
            `${t.hostname} is revoked and stays revoked: once its agent has re-enrolled, lift it with ` +
              `endpoint unrevoke ${t.hostname}`,
          );
        }
      },
    },
    revoke: {
      summary: "revoke an endpoint's certificate; its agent is disconnected and refused",
      args: '<hostname>',
      async run(ctx, argv) {
        const { positionals } = cliArgs(argv, 'endpoint revoke <hostname>', 1, {});
        await revokeEndpoint({ db: ctx.db, audit: ctx.audit, clock: ctx.clock, hostname: positionals[0]! });
        ctx.out(
          `Revoked ${positionals[0]}. Its agent can no longer connect. To bring it back, re-enrol it ` +
            `(endpoint reenroll-token ${positionals[0]}), then lift the revocation (endpoint unrevoke ${positionals[0]}).`,
        );
      },
    },
    unrevoke: {
      summary: "lift a revocation: the endpoint's current certificate is accepted again",
      args: '<hostname>',
      async run(ctx, argv) {
        const { positionals } = cliArgs(argv, 'endpoint unrevoke <hostname>', 1, {});
        const r = await unrevokeEndpoint({
          db: ctx.db,
          audit: ctx.audit,
          clock: ctx.clock,
          hostname: positionals[0]!,
        });
        if (!r.wasRevoked) return ctx.out(`${r.hostname} is not revoked; nothing changed.`);
        ctx.out(
          r.certificateReplaced
            ? `Lifted the revocation of ${r.hostname}; its certificate from the re-enrolment is accepted.`
            : `Lifted the revocation of ${r.hostname}. Warning: it was not re-enrolled since, so the very ` +
                'certificate that was revoked is accepted again.',
        );
      },
    },
  },
};
