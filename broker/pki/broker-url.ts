// Where agents reach the broker, as the broker itself last started: `DATA_DIR/pki/broker-url`. The admin
// CLI prints it in the enrolment hint, so the hint names the port the broker really listens on even when
// the CLI runs in a shell without the server's BROKER_PORT (PostgreSQL deployments, or a port of 0).
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const FILE = 'broker-url';

export function brokerUrl(publicHost: string, port: number): string {
  const host = publicHost.includes(':') && !publicHost.startsWith('[') ? `[${publicHost}]` : publicHost;
  return `wss://${host}:${port}`;
}

export function recordBrokerUrl(pkiDir: string, url: string) {
  const tmp = join(pkiDir, `${FILE}.tmp-${process.pid}`);
  writeFileSync(tmp, `${url}\n`, { mode: 0o644 });
  renameSync(tmp, join(pkiDir, FILE));
}

/** The URL the broker last started with, or undefined before its first start. */
export function readBrokerUrl(pkiDir: string): string | undefined {
  try {
    const url = readFileSync(join(pkiDir, FILE), 'utf8').trim();
    return /^wss:\/\/\S+$/.test(url) ? url : undefined;
  } catch {
    return undefined;
  }
}
