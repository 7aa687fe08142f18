// Starts GraphiQL against this gateway: queries and mutations over HTTP at /graphql,
// subscriptions over graphql-transport-ws at /graphql/ws on the same host.
(function () {
  "use strict";
  var wsScheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  var fetcher = GraphiQL.createFetcher({
    url: "/graphql",
    subscriptionUrl: wsScheme + "//" + window.location.host + "/graphql/ws",
  });
  var defaultQuery = [
    "# The library's GraphQL API: run with Ctrl-Enter.",
    "#",
    "# Anyone may read the catalogue. To act as a",
    "# reader or a librarian, put a bearer token in",
    "# Headers below:",
    '#   {"Authorization": "Bearer <token>"}',
    "# (`library token --sub NAME [--admin]` prints",
    "# one). Subscriptions send the same header in",
    "# the WebSocket's connection_init.",
    "",
    "query Books {",
    "  books(first: 5) {",
    "    totalCount",
    "    nodes { id title author availableCopies }",
    "  }",
    "}",
    "",
  ].join("\n");
  var root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: defaultQuery,
      defaultEditorToolsVisibility: "headers",
      shouldPersistHeaders: false,
    }),
  );
})();
