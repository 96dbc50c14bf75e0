// The platform secret key the tests run with, and the audit chain key derived from it. Everything that
// writes or verifies the audit log in one test (in-process services, broker processes started with
// SECRET_KEY) must use the same one, as every process of one installation does.
import { auditChainKey } from '../../bot/audit/audit-keys.ts';

export const TEST_SECRET_KEY = Buffer.alloc(32, 7);
export const testChainKey = auditChainKey(TEST_SECRET_KEY);
