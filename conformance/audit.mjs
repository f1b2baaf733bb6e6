// The GraphQL-over-HTTP spec's server audits (graphql-http's own suite) run
// against a live Rapport: `node audit.mjs http://127.0.0.1:8080/graphql`.
// Exits 1 when a MUST audit fails (error), or a SHOULD audit fails (warn)
// that is not listed in expected-warnings.json (and, with its reason, in the
// README). MAY audits only report (notice).
import { serverAudits } from 'graphql-http';
import { readFileSync } from 'node:fs';

const url = process.argv[2];
if (!url) {
  console.error('usage: node audit.mjs <graphql endpoint URL>');
  process.exit(2);
}
const expected = JSON.parse(readFileSync(new URL('./expected-warnings.json', import.meta.url)));
let failed = 0;
const counts = { ok: 0, notice: 0, warn: 0, error: 0 };
for (const audit of serverAudits({ url, fetchFn: fetch })) {
  const result = await audit.fn();
  counts[result.status] += 1;
  const known = expected.some((e) => e.id === audit.id);
  const mark = { ok: 'ok    ', notice: 'notice', warn: 'WARN  ', error: 'ERROR ' }[result.status];
  if (result.status !== 'ok') {
    console.log(`${mark} ${audit.id} ${audit.name}: ${result.reason}${known ? ' (expected, see README)' : ''}`);
  }
  if (result.status === 'error' || (result.status === 'warn' && !known)) failed += 1;
}
console.log(
  `audits: ${counts.ok} ok, ${counts.notice} MAY notices, ${counts.warn} SHOULD warnings, ${counts.error} MUST errors`,
);
process.exit(failed ? 1 : 0);
