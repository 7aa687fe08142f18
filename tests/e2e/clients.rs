//! Standard clients against the live gateway, run as they are published (npm packages under
//! `tests/clients/`, see its scripts): the GraphQL-over-HTTP audit (`graphql-http`), the full
//! introspection query of graphql-js, and GraphiQL in headless Chromium with every other host
//! blocked. They need Node and `cd tests/clients && npm ci` (ci/test.sh does both); without
//! them these tests fail, unless `LIBRARY_SKIP_NODE_CLIENTS=1`.
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::helpers::System;

/// Long enough for Chromium's first start on a busy machine.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("clients")
}

/// Runs `node tests/clients/<script> <gateway>` and fails with its output unless it exits 0.
/// Runs nothing when `LIBRARY_SKIP_NODE_CLIENTS=1`.
async fn run_client(script: &str, system: &System) {
    if std::env::var("LIBRARY_SKIP_NODE_CLIENTS").is_ok_and(|v| v == "1") {
        eprintln!("LIBRARY_SKIP_NODE_CLIENTS=1: {script} not run");
        return;
    }
    let dir = clients_dir();
    assert!(
        dir.join("node_modules").is_dir(),
        "{} has no node_modules: run `cd tests/clients && npm ci` (Node 18+), \
         or set LIBRARY_SKIP_NODE_CLIENTS=1 to leave these tests out",
        dir.display()
    );
    let node = std::env::var("NODE").unwrap_or_else(|_| "node".into());
    let child = tokio::process::Command::new(&node)
        .arg(dir.join(script))
        .arg(&system.http_url)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{node}` ({e}): install Node 20+ or set NODE"));
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {SCRIPT_TIMEOUT:?}"))
        .expect("the script's output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} against {} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        system.http_url,
        output.status
    );
}

/// The GraphQL-over-HTTP specification's audit: no error and no warning (CONTRACT.md).
async fn the_graphql_over_http_audit_passes(system: &System) {
    run_client("audit.mjs", system).await;
}

/// graphql-js's `getIntrospectionQuery()` with every option, as GraphiQL and codegen send it.
async fn the_full_introspection_query_builds_a_client_schema(system: &System) {
    run_client("introspect.mjs", system).await;
}

in_both_modes!(
    the_graphql_over_http_audit_passes,
    the_full_introspection_query_builds_a_client_schema,
);

/// GraphiQL renders and loads the schema from the gateway alone (no CDN). The page is the same
/// in both modes, so the all-in-one only.
#[tokio::test]
async fn graphiql_renders_with_no_other_host() {
    let system = System::all_in_one().await;
    run_client("graphiql.mjs", &system).await;

    // `/` sends a browser to GraphiQL until the web app takes it.
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client")
        .get(&system.http_url)
        .send()
        .await
        .expect("the gateway answers");
    assert!(response.status().is_redirection(), "{}", response.status());
    assert_eq!(response.headers()["location"], "/graphiql");
}
