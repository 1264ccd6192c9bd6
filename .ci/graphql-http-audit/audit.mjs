// Runs graphql-http's server audits against URL (argv[2]); prints each
// result and exits non-zero when a MUST fails.
import { auditServer } from 'graphql-http';
const url = process.argv[2];
const results = await auditServer({ url });
const count = { MUST: [0, 0], SHOULD: [0, 0], MAY: [0, 0] };
for (const r of results) {
  const level = r.name.split(' ')[0];
  count[level][r.status === 'ok' ? 0 : 1]++;
  const note = r.status === 'ok' ? '' : ` -- ${r.reason}${r.response ? ' (status ' + r.response.status + ')' : ''}`;
  console.log(`${r.status === 'ok' ? 'ok  ' : r.status.padEnd(4)} ${r.id} ${r.name}${note}`);
}
for (const [level, [ok, notOk]] of Object.entries(count)) {
  console.log(`${level}: ${ok} passed, ${notOk} not`);
}
process.exit(count.MUST[1] === 0 ? 0 : 1);
