// The standard full introspection query (graphql-js getIntrospectionQuery with every option a
// current client sends), as GraphiQL, graphql-codegen, Apollo and Relay tooling send it. Fails
// unless the answer has no errors and builds a client schema.
//
//   node introspect.mjs http://127.0.0.1:8080          checks
//   PRINT_SDL=1 node introspect.mjs http://...         also prints the schema as SDL
import { buildClientSchema, getIntrospectionQuery, printSchema } from 'graphql';

import { gatewayFromArgs } from './common.mjs';

const { endpoint } = gatewayFromArgs('introspect.mjs');
const query = getIntrospectionQuery({
  descriptions: true,
  specifiedByUrl: true,
  directiveIsRepeatable: true,
  schemaDescription: true,
  inputValueDeprecation: true,
});

function fail(why) {
  console.error(`FAILED: the introspection query against ${endpoint}: ${why}`);
  process.exit(1);
}

let response;
try {
  response = await fetch(endpoint, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/graphql-response+json, application/json',
    },
    body: JSON.stringify({ query, operationName: 'IntrospectionQuery' }),
  });
} catch (error) {
  fail(`no answer (${error.cause?.message ?? error.message})`);
}
const text = await response.text();
let body;
try {
  body = JSON.parse(text);
} catch {
  fail(`HTTP ${response.status}, not JSON: ${text.slice(0, 500)}`);
}
if (body.errors?.length) {
  fail(`HTTP ${response.status}, errors: ${JSON.stringify(body.errors)}`);
}
if (!response.ok) {
  fail(`HTTP ${response.status}: ${text.slice(0, 500)}`);
}
if (!body.data?.__schema) {
  fail(`no data.__schema in ${text.slice(0, 500)}`);
}

let schema;
try {
  schema = buildClientSchema(body.data);
} catch (error) {
  fail(`the answer does not build a client schema: ${error.message}`);
}
const types = Object.keys(schema.getTypeMap()).filter((name) => !name.startsWith('__'));
if (process.env.PRINT_SDL) {
  console.log(printSchema(schema));
}
console.log(`passed: the full introspection query against ${endpoint} built a schema of ${types.length} types`);
