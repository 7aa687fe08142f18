//! Tokens for development and operations: the all-in-one without `LIBRARY_JWT_SECRET` keeps its
//! development key in `./data/dev-jwt-secret`, so its tokens survive a restart, and
//! `library token` / `graphql-gateway token` print more (all-in-one and standalone binaries;
//! no distributed variant: the distributed system always has a configured secret).
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::Command;

use crate::helpers::System;

const DASHBOARD: &str = "{ myDashboard { userId } }";

/// What a `token` subcommand printed, and how it exited.
struct Printed {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `program args…` in `dir` with only `env` set.
async fn run(program: &Path, dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Printed {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    Printed {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The only thing printed: one token.
fn the_token(printed: &Printed) -> String {
    assert_eq!(printed.code, Some(0), "stderr: {}", printed.stderr);
    let lines: Vec<&str> = printed.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout is the token alone: {:?}", printed.stdout);
    assert_eq!(lines[0].split('.').count(), 3, "a JWT: {}", lines[0]);
    lines[0].to_owned()
}

fn library() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_library"))
}

/// The start-up log's reader token (JSON logs: `{"message": "reader token …", "token": …}`).
fn logged_reader_token(log: &str) -> String {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"].as_str().is_some_and(|m| m.starts_with("reader token")))
        .filter_map(|line| line["token"].as_str().map(str::to_owned))
        .next_back()
        .unwrap_or_else(|| panic!("no reader token in the log:\n{log}"))
}

async fn user_of(system: &System, token: &str) -> Value {
    let reply = system
        .client("", Some(token.to_owned()))
        .post(DASHBOARD, json!({}))
        .await;
    assert!(reply.body["errors"].is_null(), "{}", reply.body);
    reply.body["data"]["myDashboard"]["userId"].clone()
}

#[tokio::test]
async fn development_tokens_survive_a_restart_and_library_token_makes_more() {
    let system =
        System::all_in_one_with(&[("LIBRARY_JWT_SECRET", ""), ("RUST_LOG", "info"), ("LOG_FORMAT", "json")]).await;
    let key_file = system.dir().join("data").join("dev-jwt-secret");
    assert!(key_file.is_file(), "the development key is kept in ./data/");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).expect("the key file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "only its owner reads the key");
    }
    let log = system.log_of("library").await;
    assert!(
        log.contains("development JWT secret kept in ./data/dev-jwt-secret; tokens survive a restart"),
        "the start-up log says where the key is:\n{log}"
    );
    let key = std::fs::read_to_string(&key_file).expect("the key");
    assert!(!log.contains(key.trim()), "the key itself is never logged");

    let reader_token = logged_reader_token(&log);
    assert_eq!(user_of(&system, &reader_token).await, "reader-1");

    // `library token` in the same directory signs with the kept key.
    let printed = run(&library(), system.dir(), &[], &["token", "--sub", "other-reader"]).await;
    let other = the_token(&printed);
    assert_eq!(user_of(&system, &other).await, "other-reader");
    let admin = the_token(
        &run(
            &library(),
            system.dir(),
            &[],
            &["token", "--sub", "ops", "--admin", "--ttl", "30m"],
        )
        .await,
    );
    let created = system
        .client("ops", Some(admin))
        .post(
            "mutation { createBook(input: {title: \"Kept\", author: \"Key\", totalCopies: 1}) { id } }",
            json!({}),
        )
        .await;
    assert!(
        created.body["errors"].is_null(),
        "an --admin token registers a book: {}",
        created.body
    );

    // A restart in the same directory reads the key again: the old tokens still work.
    let status = system.terminate("library", Duration::from_secs(30)).await;
    assert!(status.success(), "a clean stop: {status}");
    system.start_service("library").await;
    assert_eq!(user_of(&system, &reader_token).await, "reader-1");
    assert_eq!(user_of(&system, &other).await, "other-reader");
    assert_eq!(
        std::fs::read_to_string(&key_file).expect("the key"),
        key,
        "the same key"
    );
}

#[tokio::test]
async fn the_token_subcommands_sign_with_the_configured_secret_or_say_why_not() {
    let dir = std::env::temp_dir().join(crate::helpers::unique("library-token"));
    std::fs::create_dir_all(&dir).expect("a working directory");
    let gateway = library().with_file_name(format!("graphql-gateway{}", std::env::consts::EXE_SUFFIX));
    assert!(gateway.is_file(), "run `cargo build --workspace` first");

    let printed = run(
        &gateway,
        &dir,
        &[
            ("LIBRARY_JWT_SECRET", "ops-secret"),
            ("LIBRARY_JWT_ISSUER", "library-ops"),
        ],
        &["token", "--sub", "ana", "--ttl", "2h"],
    )
    .await;
    let token = the_token(&printed);
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_issuer(&["library-ops"]);
    let claims = jsonwebtoken::decode::<Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(b"ops-secret"),
        &validation,
    )
    .expect("signed with LIBRARY_JWT_SECRET, with the configured issuer")
    .claims;
    assert_eq!(claims["sub"], "ana");
    assert_eq!(claims["roles"], json!([]));
    let lifetime = claims["exp"].as_i64().unwrap() - chrono::Utc::now().timestamp();
    assert!((7100..=7200).contains(&lifetime), "--ttl 2h: {lifetime} s");

    // No secret: exit 2, a reason on stderr, nothing on stdout.
    let refused = run(&gateway, &dir, &[], &["token", "--sub", "ana"]).await;
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);
    assert!(refused.stderr.contains("LIBRARY_JWT_SECRET"), "{}", refused.stderr);
    // A lifetime that is not one.
    let bad = run(
        &gateway,
        &dir,
        &[("LIBRARY_JWT_SECRET", "s")],
        &["token", "--sub", "ana", "--ttl", "soon"],
    )
    .await;
    // (Refused like any bad setting: one log line, which goes where the service's logs go.)
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert!(
        format!("{}{}", bad.stdout, bad.stderr).contains("`soon` is not a lifetime"),
        "{} {}",
        bad.stdout,
        bad.stderr
    );

    // `library token` with a secret given writes nothing to ./data/.
    let with_secret = run(
        &library(),
        &dir,
        &[("LIBRARY_JWT_SECRET", "ops-secret")],
        &["token", "--sub", "bo"],
    )
    .await;
    the_token(&with_secret);
    assert!(
        !dir.join("data").exists(),
        "nothing written when LIBRARY_JWT_SECRET is set"
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}
