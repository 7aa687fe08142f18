// GraphiQL as the gateway serves it, in headless Chromium with every other host blocked: it
// must render its editor, run its default query and load the schema into the docs explorer
// using nothing but the gateway. Any request to another host (a CDN), any console error, any
// page error and any HTTP error fails.
//
//   node graphiql.mjs http://127.0.0.1:8080
//   CHROMIUM=/path/to/chromium SCREENSHOT=/tmp/graphiql.png node graphiql.mjs http://...
import { chromium } from 'playwright-core';

import { gatewayFromArgs } from './common.mjs';

const { base } = gatewayFromArgs('graphiql.mjs');
const gatewayHost = new URL(base).host;
const pageUrl = `${base}/graphiql`;
const TIMEOUT_MS = Number(process.env.GRAPHIQL_TIMEOUT_MS ?? 30000);

const problems = [];
const offHost = [];

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const browser = await chromium.launch({
  executablePath,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
}).catch((error) => {
  console.error(`FAILED: cannot start Chromium at ${executablePath} (apt-get install chromium, or set CHROMIUM): ${error.message.split('\n')[0]}`);
  process.exit(1);
});

let step = 'opening the page';
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  // Everything not addressed to the gateway is refused and recorded: GraphiQL must not need it.
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (new URL(url).host === gatewayHost) {
      return route.continue();
    }
    offHost.push(url);
    return route.abort('blockedbyclient');
  });
  const page = await context.newPage();
  page.on('console', (message) => {
    if (message.type() === 'error') {
      problems.push(`console error: ${message.text()}`);
    }
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('websocket', (socket) => {
    if (new URL(socket.url()).host !== gatewayHost) {
      offHost.push(socket.url());
    }
  });
  page.on('response', (response) => {
    if (response.status() >= 400) {
      problems.push(`HTTP ${response.status()} for ${response.request().method()} ${response.url()}`);
    }
  });
  page.on('requestfailed', (request) => {
    if (new URL(request.url()).host === gatewayHost) {
      problems.push(`request failed: ${request.method()} ${request.url()} (${request.failure()?.errorText})`);
    }
  });

  const response = await page.goto(pageUrl, { waitUntil: 'load', timeout: TIMEOUT_MS });
  if (!response?.ok()) {
    throw new Error(`GET ${pageUrl} answered ${response?.status()}`);
  }

  step = 'waiting for the GraphiQL editor';
  await page.locator('.graphiql-container').waitFor({ timeout: TIMEOUT_MS });
  await page.locator('.graphiql-query-editor .CodeMirror').first().waitFor({ timeout: TIMEOUT_MS });

  step = 'running the default query (POST /graphql)';
  await page.locator('.graphiql-execute-button').click({ timeout: TIMEOUT_MS });
  await page.locator('.graphiql-response').getByText('"totalCount"').waitFor({ timeout: TIMEOUT_MS });

  step = 'opening the docs explorer (the schema, by introspection)';
  await page.getByRole('button', { name: /documentation explorer/i }).first().click({ timeout: TIMEOUT_MS });
  // The root types are listed only once the introspection answer has built a schema; a refused
  // introspection shows "Error fetching schema" instead.
  const explorer = page.locator('.graphiql-doc-explorer');
  const rootType = explorer.getByText('Query', { exact: true }).first();
  const schemaError = explorer.locator('.graphiql-doc-explorer-error').first();
  await rootType.or(schemaError).waitFor({ timeout: TIMEOUT_MS });
  if (await schemaError.isVisible()) {
    const shown = (await schemaError.textContent())?.trim();
    throw new Error(`the docs explorer shows "${shown}": the introspection query failed (node introspect.mjs ${base} tells why)`);
  }
  step = 'done';

  if (process.env.SCREENSHOT) {
    await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
  }
} catch (error) {
  problems.push(`while ${step}: ${error.message.split('\n')[0]}`);
  if (process.env.SCREENSHOT) {
    const pages = browser.contexts().flatMap((c) => c.pages());
    await pages[0]?.screenshot({ path: process.env.SCREENSHOT, fullPage: true }).catch(() => {});
  }
} finally {
  await browser.close();
}

for (const url of offHost) {
  problems.push(`tried another host (blocked): ${url}`);
}
if (problems.length > 0) {
  console.error(`FAILED: GraphiQL at ${pageUrl}:`);
  for (const problem of problems) {
    console.error(`  ${problem}`);
  }
  process.exit(1);
}
console.log(`passed: GraphiQL at ${pageUrl} rendered, ran a query and loaded the schema, with no other host`);
