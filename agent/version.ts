// The reference agent's version: the one place it is written. The agent reports it at enrolment and in every
// hello, and a test checks it covers the minimum version of every action in protocol/actions.ts that this
// agent implements, so the platform never refuses the reference agent its own actions.
export const AGENT_VERSION = '1.5.0';
