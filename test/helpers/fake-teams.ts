// A local stand-in for Microsoft's side of a Teams bot, in the spirit of fake-slack.ts:
// - an identity endpoint: Bot Framework's OpenID keys (a JWKS with a test RSA key) and Entra's token
//   endpoint for the bot's client-credentials grant, issuing RS256 tokens signed with the same test key;
// - a Bot Framework connector (`/v3/conversations/...`: create and update activities, member lookup) that
//   checks the bearer token on every call, records every call, and can be told to answer 429 (or anything);
// - the activity builders of teams-activities.ts, re-exported: genuinely signed (RS256) for /api/messages.
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  sign,
  verify,
} from 'node:crypto';
import formbody from '@fastify/formbody';
import Fastify from 'fastify';

export const BOT_FRAMEWORK_ISSUER = 'https://api.botframework.com';
export const BOT_SCOPE = 'https://api.botframework.com/.default';

export interface TestKey {
  kid: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
}

export function testKey(kid: string): TestKey {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { kid, privateKey, publicKey };
}

export function keyFromPem(kid: string, pem: string): TestKey {
  const privateKey = createPrivateKey(pem);
  return { kid, privateKey, publicKey: createPublicKey(privateKey) };
}

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

/** An RS256 JWT, as Bot Framework and Entra issue them. */
export function signJwt(key: TestKey, claims: Record<string, unknown>): string {
  const head = b64({ alg: 'RS256', typ: 'JWT', kid: key.kid });
  const body = b64(claims);
  const sig = sign('RSA-SHA256', Buffer.from(`${head}.${body}`), key.privateKey).toString('base64url');
  return `${head}.${body}.${sig}`;
}

function verifyJwt(token: string, key: TestKey): Record<string, unknown> | undefined {
  const [head, body, sig] = token.split('.');
  if (!head || !body || !sig) return undefined;
  const ok = verify(
    'RSA-SHA256',
    Buffer.from(`${head}.${body}`),
    key.publicKey,
    Buffer.from(sig, 'base64url'),
  );
  return ok ? (JSON.parse(Buffer.from(body, 'base64url').toString()) as Record<string, unknown>) : undefined;
}

export interface TeamsCall {
  seq: number;
  kind: 'create' | 'update' | 'member';
  /** Conversation id as addressed, threaded (`;messageid=`) when the message went into a thread. */
  conversationId: string;
  activityId?: string;
  memberId?: string;
  body?: Record<string, unknown>;
}

export interface FakeMember {
  id: string;
  aadObjectId: string;
  name: string;
  tenantId: string;
  userRole?: 'user' | 'guest' | 'anonymous';
  userPrincipalName?: string;
  email?: string;
}

export interface FakeTeamsOptions {
  clientId: string;
  clientSecret: string;
  tenantId: string;
  /** Signing key (PKCS#8 PEM), when the caller signs activities in another process (the benchmark). */
  privateKeyPem?: string;
}

export async function startFakeTeams(opts: FakeTeamsOptions) {
  const key = opts.privateKeyPem
    ? keyFromPem('fake-teams-key', opts.privateKeyPem)
    : testKey('fake-teams-key');
  const nowS = () => Math.floor(Date.now() / 1000);

  // ---- identity: JWKS + token endpoint ----
  const identity = Fastify({ logger: false });
  await identity.register(formbody);
  let tokenRequests = 0;
  identity.get('/v1/.well-known/openidconfiguration', async () => ({
    issuer: BOT_FRAMEWORK_ISSUER,
    jwks_uri: `${identityUrl}/v1/.well-known/keys`,
  }));
  let keyFetches = 0;
  identity.get('/v1/.well-known/keys', async () => {
    keyFetches++;
    return { keys: [{ ...key.publicKey.export({ format: 'jwk' }), kid: key.kid, use: 'sig', alg: 'RS256' }] };
  });
  identity.post('/:tenant/oauth2/v2.0/token', async (req, reply) => {
    tokenRequests++;
    const { tenant } = req.params as { tenant: string };
    const form = req.body as Record<string, string>;
    if (tenant !== opts.tenantId) {
      return reply
        .status(400)
        .send({ error: 'invalid_request', error_description: `AADSTS90002: Tenant '${tenant}' not found.` });
    }
    if (
      form.grant_type !== 'client_credentials' ||
      form.client_id !== opts.clientId ||
      form.client_secret !== opts.clientSecret
    ) {
      return reply.status(401).send({
        error: 'invalid_client',
        error_description: 'AADSTS7000215: Invalid client secret provided.',
      });
    }
    if (form.scope !== BOT_SCOPE) {
      return reply.status(400).send({
        error: 'invalid_scope',
        error_description: `AADSTS70011: scope ${form.scope} is not valid.`,
      });
    }
    const access_token = signJwt(key, {
      aud: BOT_FRAMEWORK_ISSUER,
      iss: `https://sts.windows.net/${tenant}/`,
      appid: opts.clientId,
      tid: tenant,
      iat: nowS(),
      nbf: nowS(),
      exp: nowS() + 3600,
    });
    return { token_type: 'Bearer', expires_in: 3599, ext_expires_in: 3599, access_token };
  });
  const identityUrl = await identity.listen({ host: '127.0.0.1', port: 0 });

  // ---- connector ----
  const connector = Fastify({ logger: false });
  const calls: TeamsCall[] = [];
  const waiters = new Set<() => void>();
  const members = new Map<string, FakeMember[]>();
  const activities = new Map<string, Record<string, unknown>>();
  const failures: { status: number; retryAfter?: string; when: (c: TeamsCall) => boolean; times: number }[] =
    [];
  let seq = 0;
  let idSeq = 1_700_000_000_000;
  let refusedAuth = 0;
  /** Calls answered with an injected failure (not in `calls`). */
  const rejected: (TeamsCall & { status: number })[] = [];

  connector.route({
    method: ['GET', 'POST', 'PUT'],
    url: '/v3/conversations/*',
    handler: async (req, reply) => {
      const auth = req.headers.authorization;
      const claims = auth?.startsWith('Bearer ') ? verifyJwt(auth.slice(7), key) : undefined;
      if (
        !claims ||
        claims.aud !== BOT_FRAMEWORK_ISSUER ||
        claims.appid !== opts.clientId ||
        Number(claims.exp) < nowS()
      ) {
        refusedAuth++;
        return reply.status(401).send({ message: 'Authorization has been denied for this request.' });
      }
      const path = req.url.split('?')[0]!.slice('/v3/conversations/'.length);
      const parts = path.split('/').map((p) => decodeURIComponent(p));
      const conversationId = parts[0]!;
      let call: TeamsCall;
      if (req.method === 'POST' && parts[1] === 'activities' && parts.length === 2) {
        call = { seq: ++seq, kind: 'create', conversationId, body: req.body as Record<string, unknown> };
      } else if (req.method === 'PUT' && parts[1] === 'activities' && parts[2]) {
        call = {
          seq: ++seq,
          kind: 'update',
          conversationId,
          activityId: parts[2],
          body: req.body as Record<string, unknown>,
        };
      } else if (req.method === 'GET' && parts[1] === 'members' && parts[2]) {
        call = { seq: ++seq, kind: 'member', conversationId, memberId: parts[2] };
      } else {
        return reply
          .status(404)
          .send({ error: { code: 'NotFound', message: `no route ${req.method} ${path}` } });
      }
      const failure = failures.find((f) => f.times > 0 && f.when(call));
      if (failure) {
        failure.times--;
        rejected.push({ ...call, status: failure.status });
        if (failure.retryAfter !== undefined) reply.header('retry-after', failure.retryAfter);
        return reply
          .status(failure.status)
          .send({ error: { code: 'Throttled', message: 'Too many requests' } });
      }
      calls.push(call);
      for (const w of [...waiters]) w();
      switch (call.kind) {
        case 'create': {
          const id = String(++idSeq);
          activities.set(id, { ...call.body, id });
          call.activityId = id;
          return reply.status(201).send({ id });
        }
        case 'update': {
          if (!activities.has(call.activityId!)) {
            return reply
              .status(404)
              .send({ error: { code: 'ActivityNotFoundInConversation', message: 'not found' } });
          }
          activities.set(call.activityId!, { ...call.body, id: call.activityId });
          return { id: call.activityId };
        }
        default: {
          const base = conversationId.split(';')[0]!;
          const m = (members.get(base) ?? []).find(
            (x) => x.id === call.memberId || x.aadObjectId.toLowerCase() === call.memberId!.toLowerCase(),
          );
          if (!m)
            return reply
              .status(404)
              .send({ error: { code: 'MemberNotFoundInConversation', message: 'not a member' } });
          return { ...m, userRole: m.userRole ?? 'user' };
        }
      }
    },
  });
  const serviceUrl = await connector.listen({ host: '127.0.0.1', port: 0 });

  return {
    key,
    identityUrl,
    /** The connector's base, as activities name it in `serviceUrl`. */
    serviceUrl,
    /** The SDK's cloud settings pointing at this stand-in. */
    cloud: {
      name: 'Public' as const,
      loginEndpoint: identityUrl,
      openIdMetadataUrl: `${identityUrl}/v1/.well-known/openidconfiguration`,
      serviceUrl,
    },
    calls,
    rejected,
    callsOf: (kind: TeamsCall['kind']) => calls.filter((c) => c.kind === kind),
    /** How many times the key set was fetched. */
    keyFetches: () => keyFetches,
    /** How many client-credentials grants were asked for. */
    tokenRequests: () => tokenRequests,
    /** Connector calls refused for a missing or bad bearer token. */
    refusedAuth: () => refusedAuth,
    addMember(conversationId: string, m: FakeMember) {
      const list = members.get(conversationId) ?? [];
      list.push(m);
      members.set(conversationId, list);
    },
    /** The next `times` calls matching `when` are answered with `status` (and Retry-After), not recorded. */
    fail(
      status: number,
      opts: { times?: number; retryAfter?: string; when?: (c: TeamsCall) => boolean } = {},
    ) {
      failures.push({
        status,
        retryAfter: opts.retryAfter,
        when: opts.when ?? (() => true),
        times: opts.times ?? 1,
      });
    },
    /** The current content of a posted activity (after edits). */
    activity: (id: string) => activities.get(id),
    waitFor(pred: (c: TeamsCall) => boolean, ms = 10_000): Promise<TeamsCall> {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = calls.find(pred);
          if (!found) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolve(found);
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          const seen = calls.map((c) => `${c.kind} ${c.conversationId} ${textOf(c).slice(0, 80)}`).join('\n');
          reject(new Error(`no Teams call matched within ${ms} ms; calls so far:\n${seen}`));
        }, ms);
        waiters.add(check);
        check();
      });
    },
    async close() {
      await connector.close();
      await identity.close();
    },
  };
}

export type FakeTeams = Awaited<ReturnType<typeof startFakeTeams>>;

// ---- what was sent ----

/** The plain text of a recorded message, or '' for a card. */
export function textOf(c: TeamsCall): string {
  return typeof c.body?.text === 'string' ? c.body.text : '';
}

/** The Adaptive Card in a recorded message, if any. */
export function cardOf(
  c: { body?: Record<string, unknown> } | undefined,
): Record<string, unknown> | undefined {
  const attachments = c?.body?.attachments as
    | { contentType: string; content: Record<string, unknown> }[]
    | undefined;
  return attachments?.find((a) => a.contentType === 'application/vnd.microsoft.card.adaptive')?.content;
}

export {
  type Conversation,
  cardAction,
  messageActivity,
  type Person,
  signedActivity,
} from './teams-activities.ts';
