// What `npm start` says once everything listens: where the web page is and what a person does next. The
// same words go into the final log line and, on a terminal, to stdout as plain text.

export interface StartFacts {
  /** PUBLIC_URL: where people open the web pages. */
  publicUrl: string;
  slackEnabled: boolean;
  teamsEnabled?: boolean;
  /** The embedded database admits one process at a time, so the CLI needs the server stopped. */
  embedded: boolean;
}

export function nextSteps(f: StartFacts): string[] {
  return [
    `Open ${f.publicUrl}/ in a browser: the front page says what runs here.`,
    f.embedded
      ? 'Add a user with the CLI: stop this server (Ctrl-C), run npm run cli -- user add <name>, then npm start again.'
      : 'Add a user with the CLI: npm run cli -- user add <name>.',
    ...chatSteps(f),
  ];
}

function chatSteps(f: StartFacts): string[] {
  const steps: string[] = [];
  if (f.slackEnabled) steps.push('Slack is connected: type /ar help in a channel the app is in.');
  if (f.teamsEnabled)
    steps.push(
      'Microsoft Teams is connected: @mention the bot with help in a channel or chat it was added to.',
    );
  if (!steps.length) {
    steps.push(
      'Connect Slack: set SLACK_SIGNING_SECRET and SLACK_BOT_TOKEN (README, "Connecting Slack"), or Microsoft Teams: set TEAMS_CLIENT_ID, TEAMS_CLIENT_SECRET and TEAMS_TENANT_ID (README, "Connecting Microsoft Teams"), and restart.',
    );
  }
  return steps;
}

/** The plain-text block printed to a terminal. */
export function startBanner(f: StartFacts): string {
  const steps = nextSteps(f).map((s, i) => `  ${i + 1}. ${s}`);
  return ['', 'Active Response is running. Next steps:', ...steps, ''].join('\n');
}
