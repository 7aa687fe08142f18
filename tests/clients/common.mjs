// What the client checks share: reading the gateway's address from the command line.

/**
 * The gateway's base URL and its GraphQL endpoint, from the first argument: either the base
 * (`http://127.0.0.1:8080`, the endpoint is then `/graphql`) or the endpoint itself (any path).
 * Exits with status 2 and a usage line when the argument is missing or not a URL.
 */
export function gatewayFromArgs(script) {
  const arg = process.argv[2];
  let url;
  try {
    url = new URL(arg);
  } catch {
    console.error(`usage: node ${script} GATEWAY_URL   (e.g. http://127.0.0.1:8080)`);
    process.exit(2);
  }
  const base = url.origin;
  const endpoint = url.pathname === '/' ? `${base}/graphql` : `${base}${url.pathname}`;
  return { base, endpoint };
}
