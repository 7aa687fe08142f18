// The GraphQL-over-HTTP specification's own audit (graphql-http's auditServer) against a live
// gateway. Fails on any error (a MUST) or warning (a SHOULD): the contract promises neither.
//
//   node audit.mjs http://127.0.0.1:8080
import { auditServer } from 'graphql-http';

import { gatewayFromArgs } from './common.mjs';

const { endpoint } = gatewayFromArgs('audit.mjs');
const results = await auditServer({ url: endpoint });

const counts = { ok: 0, notice: 0, warn: 0, error: 0 };
for (const result of results) {
  counts[result.status] = (counts[result.status] ?? 0) + 1;
  const line = `${result.status.padEnd(6)} ${result.id}  ${result.name}`;
  if (result.status === 'ok') {
    console.log(line);
  } else {
    console.log(`${line}\n         ${result.reason}`);
  }
}

const summary = `${results.length} audits against ${endpoint}: ${counts.ok} ok, ${counts.notice} notices, ${counts.warn} warnings, ${counts.error} errors`;
if (counts.error > 0 || counts.warn > 0) {
  console.error(`FAILED: ${summary}`);
  for (const result of results.filter((r) => r.status === 'error' || r.status === 'warn')) {
    console.error(`  ${result.status} ${result.id} ${result.name}: ${result.reason}`);
  }
  process.exit(1);
}
console.log(`passed: ${summary}`);
