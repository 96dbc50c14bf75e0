// Splits chat text into words the way a shell user expects: "double" and 'single' quotes group words,
// a backslash escapes a quote inside double quotes. Chat clients turn quotes into typographic ones, so
// those are folded back to plain quotes first; otherwise `--reason “C2 beacon”` would split in two.
import { BadRequest } from '../errors.ts';

export interface Token {
  text: string;
  /** True when any part of the token was quoted: `"--reason"` is then a word, not an option. */
  quoted: boolean;
}

const TYPOGRAPHIC: Record<string, string> = { '“': '"', '”': '"', '„': '"', '‘': "'", '’': "'" };

export function tokenize(input: string): Token[] {
  const text = input.replace(/[“”„‘’]/g, (c) => TYPOGRAPHIC[c] ?? c);
  const tokens: Token[] = [];
  let cur = '';
  let inToken = false;
  let quoted = false;
  let quote: '"' | "'" | null = null;
  let quoteStart = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quote) {
      if (c === quote) {
        quote = null;
      } else if (c === '\\' && quote === '"' && (text[i + 1] === '"' || text[i + 1] === '\\')) {
        cur += text[++i];
      } else {
        cur += c;
      }
      continue;
    }
    if (c === '"' || c === "'") {
      quote = c;
      quoteStart = i;
      inToken = true;
      quoted = true;
    } else if (/\s/.test(c)) {
      if (inToken) tokens.push({ text: cur, quoted });
      cur = '';
      inToken = false;
      quoted = false;
    } else {
      cur += c;
      inToken = true;
    }
  }
  if (quote) {
    const snippet = text.slice(quoteStart, quoteStart + 40);
    throw new BadRequest(
      'command.unterminated_quote',
      `The quote opened at ${snippet}${text.length > quoteStart + 40 ? '…' : ''} is never closed. Close it with a matching ${quote}.`,
    );
  }
  if (inToken) tokens.push({ text: cur, quoted });
  return tokens;
}

/**
 * Removes what the chat platform puts before the command itself: a Slack mention `<@U123>` or
 * `<@U123|bot>`, a Teams `<at>Bot</at>`, a plain `@bot`, or the slash command word (`/ar`).
 */
export function stripPrefix(text: string): string {
  let t = text.trim();
  for (;;) {
    const next = t
      .replace(/^<@[A-Z0-9]+(\|[^>]*)?>\s*/i, '')
      .replace(/^<at>[^<]*<\/at>\s*/i, '')
      .replace(/^@[\w.-]+\s*/, '')
      .replace(/^\/[\w-]+\s*/, '');
    if (next === t) return t;
    t = next;
  }
}
