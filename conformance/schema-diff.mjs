// What changed in the public contract: `node schema-diff.mjs OLD NEW`
// prints every change between two SDL files with its criticality
// (BREAKING, DANGEROUS, NON_BREAKING), using @graphql-inspector/core, and
// a summary line. Exits 0: CI reports breaking changes, it does not block
// them; pass --fail-on-breaking to make them fail.
import { diff, CriticalityLevel } from '@graphql-inspector/core';
import { buildSchema } from 'graphql';
import { readFileSync } from 'node:fs';

const [oldPath, newPath, flag] = process.argv.slice(2);
if (!oldPath || !newPath) {
  console.error('usage: node schema-diff.mjs <old.graphql> <new.graphql> [--fail-on-breaking]');
  process.exit(2);
}
const load = (p) => buildSchema(readFileSync(p, 'utf8'));
const changes = await diff(load(oldPath), load(newPath));
const count = { BREAKING: 0, DANGEROUS: 0, NON_BREAKING: 0 };
for (const c of changes) {
  const level = c.criticality.level;
  count[level] += 1;
  console.log(`${level.padEnd(12)} ${c.message}`);
}
console.log(
  `schema changes: ${count.BREAKING} breaking, ${count.DANGEROUS} dangerous, ${count.NON_BREAKING} safe`,
);
process.exit(flag === '--fail-on-breaking' && count[CriticalityLevel.Breaking] > 0 ? 1 : 0);
