//! The system under test, started the two ways it ships, and a client that talks to it the way
//! a web front end does: GraphQL over HTTP (`POST /graphql`) and `graphql-transport-ws` over
//! WebSocket (`/graphql/ws`). Nothing here reaches behind the gateway except to start, stop and
//! clean up processes, databases and broker vhosts.
//!
//! - [`System::all_in_one`]: the `library` binary in a fresh working directory (so `./data/` is
//!   fresh), SQLite and the in-process bus.
//! - [`System::distributed`]: one process per service, each on its own fresh PostgreSQL
//!   database, all on a RabbitMQ vhost of their own (the standalone services use the contract's
//!   fixed exchange and queue names, so two systems on one vhost would steal each other's
//!   messages). [`System::shared_distributed`] is one such system per test binary, for the tests
//!   that do not disturb it.
//!
//! Every process is a direct child started with `kill_on_drop`; a small janitor process (a shell
//! reading a pipe from this test binary: `library_platform::test_support::Janitor`) also kills
//! them and removes the vhost and the working directory, and `fresh_postgres_database` has its
//! databases dropped, when the test binary ends in any way, including the shared system that is
//! never dropped.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use library_platform::test_support::{Janitor, sh_quote};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

/// How long an eventually-consistent outcome may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How often [`eventually`] looks again.
const POLL: Duration = Duration::from_millis(20);
/// How long a process may take to become ready.
const STARTUP: Duration = Duration::from_secs(30);
/// borrow-svc's deadline for the synchronous stock check (default 200 ms). A check that misses
/// its deadline is, by design, degraded to the saga: the borrow is accepted as PENDING and
/// canceled later. On a loaded test machine (parallel tests, debug builds, 2 cores) 200 ms is
/// sometimes missed, and the tests of the synchronous refusals (OUT_OF_STOCK, NOT_FOUND at once)
/// would flake; the degraded path has its own test (book-svc down). Below the gateway's own
/// 3 s deadline, so a slow check never turns into a client error for a borrow that happened.
const STOCK_CHECK_TIMEOUT_MS: &str = "2000";

// ---------------------------------------------------------------------------------------------
// Polling
// ---------------------------------------------------------------------------------------------

/// Polls `check` every 20 ms until it returns `Ok`, for at most `timeout`; `Err` carries what was
/// last seen, for the failure message.
pub async fn try_eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return Ok(value),
            Err(last) if Instant::now() >= deadline => return Err(last),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// Like [`try_eventually`], failing the test with `what` and the last observation.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    match try_eventually(timeout, check).await {
        Ok(value) => value,
        Err(last) => panic!("{what}: not reached within {timeout:?}; last seen: {last}"),
    }
}

/// A port nobody listens on right now, for a child process to bind a moment later.
///
/// Taken below the kernel's ephemeral range (32768+ on Linux): a port the kernel handed out
/// with `bind(0)` can be handed out again as the source port of any outgoing connection (to
/// PostgreSQL, RabbitMQ, another test's gateway) before the child binds it. Ports are dealt
/// from a per-process sequence, so two tests of this binary never get the same one, and
/// started at an offset from the pid, so two test binaries rarely meet.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id() * 97 % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN)
}

/// A name no other test run uses.
/// Where borrow-svc (or the all-in-one) of a system in `dir` appends its audit lines.
fn audit_dir(dir: &Path) -> PathBuf {
    dir.join("audit")
}

pub fn unique(label: &str) -> String {
    format!("{label}-{}", Uuid::new_v4().simple())
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// Settings of the system that must come from the test, never from the caller's environment.
fn is_system_setting(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "DATABASE_URL",
        "AMQP_URL",
        "RUST_LOG",
        "LOG_FORMAT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ];
    const PREFIXES: &[&str] = &["LIBRARY_", "GATEWAY_", "BOOK_", "BORROW_", "DASHBOARD_"];
    EXACT.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// One process of the system: how to start it again, and the running child.
struct Process {
    name: &'static str,
    program: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    /// A gRPC port that must accept connections before the process counts as ready.
    grpc_port: Option<u16>,
    child: Option<Child>,
}

impl Process {
    /// A process not started yet, logging to `<dir>/<name>.log`.
    fn new(
        name: &'static str,
        program: PathBuf,
        env: Vec<(String, String)>,
        dir: &Path,
        grpc_port: Option<u16>,
    ) -> Self {
        Self {
            name,
            program,
            env,
            log: dir.join(format!("{name}.log")),
            grpc_port,
            child: None,
        }
    }

    fn spawn(&mut self, dir: &Path, janitor: &mut Janitor) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the process log");
        let err = log.try_clone().expect("clone the log handle");
        let mut command = Command::new(&self.program);
        for (name, _) in std::env::vars_os() {
            if name.to_str().is_some_and(is_system_setting) {
                command.env_remove(name);
            }
        }
        command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {} ({}): {e}", self.name, self.program.display()));
        if let Some(pid) = child.id() {
            // Only if that pid is still this process (its working directory is this system's),
            // not a later process that reused the pid.
            janitor.at_end(&format!(
                "[ \"$(readlink /proc/{pid}/cwd 2>/dev/null)\" = {} ] && kill {pid} 2>/dev/null",
                sh_quote(&dir.display().to_string())
            ));
        }
        self.child = Some(child);
    }

    /// Panics with the log when the process has already exited.
    fn check_alive(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!(
                "{} exited during the test ({status}); its log:\n{}",
                self.name,
                log_tail(&self.log, 80)
            );
        }
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The binary of another package of the workspace, built by `cargo build --workspace`, next to
/// the root package's `library`.
fn workspace_binary(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_library"))
        .parent()
        .expect("the target directory");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: the distributed tests run the services' own binaries; \
         run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// A running library system, reached through its gateway.
pub struct System {
    /// `http://127.0.0.1:<port>`
    pub http_url: String,
    /// `ws://127.0.0.1:<port>/graphql/ws`
    pub ws_url: String,
    secret: String,
    dir: PathBuf,
    processes: tokio::sync::Mutex<Vec<Process>>,
    janitor: std::sync::Mutex<Janitor>,
}

impl Drop for System {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        // The children are killed as they drop (kill_on_drop); then the janitor's pipe closes.
    }
}

impl System {
    /// The all-in-one `library` binary with the default settings.
    pub async fn all_in_one() -> System {
        Self::all_in_one_with(&[]).await
    }

    /// The all-in-one `library` binary with extra settings.
    pub async fn all_in_one_with(settings: &[(&str, &str)]) -> System {
        let dir = std::env::temp_dir().join(unique("library-e2e"));
        std::fs::create_dir_all(&dir).expect("create the working directory");
        let dir = dir.canonicalize().expect("the working directory's path");
        let mut janitor = Janitor::start();
        janitor.at_end(&format!("rm -rf {}", sh_quote(&dir.display().to_string())));
        let port = free_port();
        let secret = unique("e2e-secret");
        let mut env = vec![
            ("GATEWAY_HTTP_ADDR".to_owned(), format!("127.0.0.1:{port}")),
            ("BOOK_GRPC_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
            ("BORROW_GRPC_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
            ("DASHBOARD_GRPC_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
            ("LIBRARY_JWT_SECRET".to_owned(), secret.clone()),
            (
                "LIBRARY_STOCK_CHECK_TIMEOUT_MS".to_owned(),
                STOCK_CHECK_TIMEOUT_MS.to_owned(),
            ),
            ("RUST_LOG".to_owned(), "warn".to_owned()),
            ("LIBRARY_AUDIT_DIR".to_owned(), audit_dir(&dir).display().to_string()),
        ];
        env.extend(settings.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let mut process = Process::new("library", PathBuf::from(env!("CARGO_BIN_EXE_library")), env, &dir, None);
        process.spawn(&dir, &mut janitor);
        let system = System {
            http_url: format!("http://127.0.0.1:{port}"),
            ws_url: format!("ws://127.0.0.1:{port}/graphql/ws"),
            secret,
            dir,
            processes: tokio::sync::Mutex::new(vec![process]),
            janitor: std::sync::Mutex::new(janitor),
        };
        system.wait_ready().await;
        system
    }

    /// One process per service on PostgreSQL and a RabbitMQ vhost of its own, shared by every
    /// test of this binary that calls it (each uses its own readers and books). Never dropped:
    /// the janitor cleans up when the test binary ends.
    pub async fn shared_distributed() -> &'static System {
        static SHARED: tokio::sync::OnceCell<Result<System, String>> = tokio::sync::OnceCell::const_new();
        let started = SHARED
            .get_or_init(|| async {
                // A failed start is remembered, so every test sharing it fails at once with why.
                let attempt = tokio::spawn(System::distributed()).await;
                attempt.map_err(|e| match e.try_into_panic() {
                    Ok(panic) => panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_else(|| "the shared distributed system did not start".into()),
                    Err(e) => e.to_string(),
                })
            })
            .await;
        match started {
            Ok(system) => system,
            Err(why) => panic!("the shared distributed system did not start: {why}"),
        }
    }

    /// One process per service on fresh PostgreSQL databases and a fresh RabbitMQ vhost.
    pub async fn distributed() -> System {
        Self::distributed_except(&[]).await
    }

    /// [`System::distributed`] with the named processes configured but not started (as when
    /// pods come up in any order); [`System::start_service`] starts them. Without every process,
    /// no warm-up borrow proves the broker topology.
    pub async fn distributed_except(not_started: &[&str]) -> System {
        Self::distributed_configured(not_started, &[]).await
    }

    /// [`System::distributed`] with `settings` added to every process's environment (e.g.
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub async fn distributed_with(settings: &[(&str, &str)]) -> System {
        Self::distributed_configured(&[], settings).await
    }

    async fn distributed_configured(not_started: &[&str], settings: &[(&str, &str)]) -> System {
        let binaries = ["book-svc", "borrow-svc", "dashboard-svc", "graphql-gateway"].map(workspace_binary);
        let dir = std::env::temp_dir().join(unique("library-e2e"));
        std::fs::create_dir_all(&dir).expect("create the working directory");
        let dir = dir.canonicalize().expect("the working directory's path");
        let mut janitor = Janitor::start();
        janitor.at_end(&format!("rm -rf {}", sh_quote(&dir.display().to_string())));

        let vhost = unique("library-e2e");
        let (amqp_url, amqp_user) = amqp_url_for_vhost(&vhost);
        rabbitmqctl(&["add_vhost", &vhost]).await;
        janitor.at_end(&format!(
            "rabbitmqctl delete_vhost {} >/dev/null 2>&1",
            sh_quote(&vhost)
        ));
        rabbitmqctl(&["set_permissions", "-p", &vhost, &amqp_user, ".*", ".*", ".*"]).await;

        let mut databases = Vec::new();
        for service in ["book", "borrow", "dashboard"] {
            databases.push(library_platform::test_support::fresh_postgres_database(&format!("e2e_{service}")).await);
        }

        let (book_port, borrow_port, dashboard_port, http_port) = (free_port(), free_port(), free_port(), free_port());
        let secret = unique("e2e-secret");
        let common = |extra: Vec<(&str, String)>| {
            let mut env = vec![("RUST_LOG".to_owned(), "warn".to_owned())];
            env.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
            env.extend(settings.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
            env
        };
        let [book_bin, borrow_bin, dashboard_bin, gateway_bin] = binaries;
        let mut processes = vec![
            Process::new(
                "book-svc",
                book_bin,
                common(vec![
                    ("BOOK_GRPC_ADDR", format!("127.0.0.1:{book_port}")),
                    ("DATABASE_URL", databases[0].clone()),
                    ("AMQP_URL", amqp_url.clone()),
                    // A borrow-svc killed between a hold and its loan leaves holds that settle
                    // within the tests' waits.
                    ("LIBRARY_STOCK_HOLD_TTL", "3".to_owned()),
                ]),
                &dir,
                Some(book_port),
            ),
            Process::new(
                "borrow-svc",
                borrow_bin,
                common(vec![
                    ("BORROW_GRPC_ADDR", format!("127.0.0.1:{borrow_port}")),
                    ("BOOK_SVC_URL", format!("http://127.0.0.1:{book_port}")),
                    ("LIBRARY_STOCK_CHECK_TIMEOUT_MS", STOCK_CHECK_TIMEOUT_MS.to_owned()),
                    ("LIBRARY_HOLD_SETTLE_INTERVAL", "0.2".to_owned()),
                    ("DATABASE_URL", databases[1].clone()),
                    ("AMQP_URL", amqp_url.clone()),
                    ("LIBRARY_AUDIT_DIR", audit_dir(&dir).display().to_string()),
                ]),
                &dir,
                Some(borrow_port),
            ),
            Process::new(
                "dashboard-svc",
                dashboard_bin,
                common(vec![
                    ("DASHBOARD_GRPC_ADDR", format!("127.0.0.1:{dashboard_port}")),
                    ("DATABASE_URL", databases[2].clone()),
                    ("AMQP_URL", amqp_url.clone()),
                ]),
                &dir,
                Some(dashboard_port),
            ),
            Process::new(
                "graphql-gateway",
                gateway_bin,
                common(vec![
                    ("GATEWAY_HTTP_ADDR", format!("127.0.0.1:{http_port}")),
                    ("BOOK_SVC_URL", format!("http://127.0.0.1:{book_port}")),
                    ("BORROW_SVC_URL", format!("http://127.0.0.1:{borrow_port}")),
                    ("DASHBOARD_SVC_URL", format!("http://127.0.0.1:{dashboard_port}")),
                    ("LIBRARY_JWT_SECRET", secret.clone()),
                    // The all-in-one's default, so CORS is tested alike in both modes.
                    (
                        "GATEWAY_CORS_ORIGINS",
                        "http://localhost:*,http://127.0.0.1:*".to_owned(),
                    ),
                ]),
                &dir,
                None,
            ),
        ];
        for process in &mut processes {
            if !not_started.contains(&process.name) {
                process.spawn(&dir, &mut janitor);
            }
        }
        let system = System {
            http_url: format!("http://127.0.0.1:{http_port}"),
            ws_url: format!("ws://127.0.0.1:{http_port}/graphql/ws"),
            secret,
            dir,
            processes: tokio::sync::Mutex::new(processes),
            janitor: std::sync::Mutex::new(janitor),
        };
        system.wait_ready().await;
        if not_started.is_empty() {
            system.warm_up().await;
        }
        system
    }

    /// Every started process alive, the gateway's `/readyz` 200 and every started service's
    /// gRPC port accepting.
    async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        let readyz = format!("{}/readyz", self.http_url);
        let outcome = try_eventually(STARTUP, || async {
            let ports: Vec<u16> = {
                let mut processes = self.processes.lock().await;
                for process in processes.iter_mut() {
                    process.check_alive();
                }
                processes
                    .iter()
                    .filter(|p| p.child.is_some())
                    .filter_map(|p| p.grpc_port)
                    .collect()
            };
            for port in ports {
                TcpStream::connect(("127.0.0.1", port))
                    .await
                    .map_err(|e| format!("gRPC port {port}: {e}"))?;
            }
            match http.get(&readyz).send().await {
                Ok(r) if r.status() == 200 => Ok(()),
                Ok(r) => Err(format!("/readyz answered {}", r.status())),
                Err(e) => Err(format!("/readyz: {e}")),
            }
        })
        .await;
        if let Err(last) = outcome {
            self.print_logs();
            panic!("the system did not become ready within {STARTUP:?}: {last}");
        }
    }

    /// Proves the broker topology is in place before any test relies on it: the standalone
    /// services declare their queues in the background after they start listening, and an event
    /// published before its consumer's queue is bound is not routed anywhere. A borrow must
    /// become ACTIVE (book-svc's and borrow-svc's saga queues), reach the dashboard (its
    /// projection queue) and show on a `bookStock` subscription (book-svc's watch feed).
    async fn warm_up(&self) {
        let admin = self.admin();
        let book = admin.create_book("warm-up", 1_000).await;
        let book_id = book["id"].as_str().expect("book id").to_owned();
        let mut last = String::new();
        for _ in 0..5 {
            let reader = self.reader("warm-up");
            let mut stock = self.subscribe(None, BOOK_STOCK, json!({ "bookId": book_id })).await;
            let before = stock.next_data().await["bookStock"]["availableCopies"]
                .as_i64()
                .expect("availableCopies");
            let loan = reader.borrow_ok(&book_id, 1).await;
            let loan_id = loan["id"].as_str().expect("loan id").to_owned();
            let settled = try_eventually(Duration::from_secs(3), || async {
                let status = reader.loan_status(&loan_id).await;
                let count = reader.dashboard_counts().await.0;
                if status == "ACTIVE" && count == 1 {
                    Ok(())
                } else {
                    Err(format!("loan {status}, dashboard borrowedCount {count}"))
                }
            })
            .await;
            let watched = match settled {
                Ok(()) => stock
                    .try_until(Duration::from_secs(3), |data| {
                        data["bookStock"]["availableCopies"]
                            .as_i64()
                            .is_some_and(|n| n < before)
                    })
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("bookStock subscription: {e}")),
                Err(e) => Err(e),
            };
            match watched {
                Ok(()) => return,
                Err(e) => last = e,
            }
        }
        self.print_logs();
        panic!("the distributed system did not settle a warm-up borrow: {last}");
    }

    /// The gRPC port of one process of the distributed system (e.g. `book-svc`).
    pub async fn grpc_port(&self, name: &str) -> u16 {
        let processes = self.processes.lock().await;
        processes
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.grpc_port)
            .unwrap_or_else(|| panic!("no process named {name} with a gRPC port"))
    }

    /// Kills one process (e.g. `book-svc`), as a crash would.
    pub async fn stop_service(&self, name: &str) {
        let mut processes = self.processes.lock().await;
        let process = processes
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no process named {name}"));
        let mut child = process.child.take().unwrap_or_else(|| panic!("{name} is not running"));
        child.kill().await.expect("kill the process");
    }

    /// Sends SIGTERM to one process (e.g. `library`), as Kubernetes does, and waits for it to
    /// exit; returns its exit status.
    pub async fn terminate(&self, name: &str, within: Duration) -> std::process::ExitStatus {
        let mut processes = self.processes.lock().await;
        let process = processes
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no process named {name}"));
        let mut child = process.child.take().unwrap_or_else(|| panic!("{name} is not running"));
        let pid = child.id().expect("a running process has a pid");
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(sent.success(), "SIGTERM sent to {name}");
        match tokio::time::timeout(within, child.wait()).await {
            Ok(status) => status.expect("wait for the process"),
            Err(_) => panic!(
                "{name} did not exit within {within:?} of SIGTERM; its log:\n{}",
                log_tail(&process.log, 80)
            ),
        }
    }

    /// Starts one more replica of `name` (same database, same broker, its own port given by
    /// `listen_variable`), as a scaled Deployment would, and waits until it is ready.
    pub async fn start_replica(&self, name: &str, listen_variable: &str) {
        {
            let mut processes = self.processes.lock().await;
            let original = processes
                .iter()
                .find(|p| p.name == name)
                .unwrap_or_else(|| panic!("no process named {name}"));
            let port = free_port();
            let mut env = original.env.clone();
            for (variable, value) in &mut env {
                if variable == listen_variable {
                    *value = format!("127.0.0.1:{port}");
                }
            }
            let replica_name: &'static str = Box::leak(format!("{name}-replica-{}", processes.len()).into_boxed_str());
            let mut replica = Process::new(replica_name, original.program.clone(), env, &self.dir, Some(port));
            let mut janitor = self.janitor.lock().expect("janitor");
            replica.spawn(&self.dir, &mut janitor);
            processes.push(replica);
        }
        self.wait_ready().await;
    }

    /// Starts a stopped process again with the same settings, and waits until it is ready.
    pub async fn start_service(&self, name: &str) {
        {
            let mut processes = self.processes.lock().await;
            let process = processes
                .iter_mut()
                .find(|p| p.name == name)
                .unwrap_or_else(|| panic!("no process named {name}"));
            let mut janitor = self.janitor.lock().expect("janitor");
            process.spawn(&self.dir, &mut janitor);
        }
        self.wait_ready().await;
    }

    /// The transitions the audit log holds for `loan_id`, in the order they happened, each once
    /// (a line written again after a crash repeats its id).
    pub fn audited(&self, loan_id: &str) -> Vec<String> {
        let mut lines: Vec<Value> = Vec::new();
        for file in std::fs::read_dir(audit_dir(&self.dir)).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(file.path()).unwrap_or_default();
            lines.extend(
                text.lines().map(|l| {
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("an audit line is not JSON ({e}): {l}"))
                }),
            );
        }
        lines.retain(|line| line["loan_id"] == loan_id);
        lines.sort_by_key(|line| line["id"].as_i64());
        lines.dedup_by_key(|line| line["id"].as_i64());
        lines
            .iter()
            .map(|line| line["transition"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Waits until the audit log holds exactly `expected` for `loan_id`.
    pub async fn wait_audited(&self, loan_id: &str, expected: &[&str]) {
        eventually("the loan's transitions audited", TIMEOUT, || async {
            let audited = self.audited(loan_id);
            if audited == expected {
                Ok(())
            } else {
                Err(format!("audited {audited:?}, expected {expected:?}"))
            }
        })
        .await
    }

    /// Prints the end of every process's log (on a failure).
    pub fn print_logs(&self) {
        if let Ok(processes) = self.processes.try_lock() {
            for process in processes.iter() {
                eprintln!(
                    "----- {} log ({}) -----\n{}",
                    process.name,
                    process.log.display(),
                    log_tail(&process.log, 60)
                );
            }
        }
    }

    // --- clients ---------------------------------------------------------------------------

    /// A signed token for `sub` with `roles`, expiring `ttl_seconds` from now (negative: expired).
    pub fn token(&self, sub: &str, roles: &[&str], ttl_seconds: i64) -> String {
        sign_token(&self.secret, sub, roles, ttl_seconds)
    }

    /// A token with exactly `claims`, signed with the system's key.
    pub fn token_with_claims(&self, claims: &Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(self.secret.as_bytes()),
        )
        .expect("sign a token")
    }

    /// The system's working directory (the all-in-one's `./data/` is under it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the process `name` has logged so far.
    pub async fn log_of(&self, name: &str) -> String {
        let processes = self.processes.lock().await;
        let process = processes
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no process named {name}"));
        std::fs::read_to_string(&process.log).unwrap_or_default()
    }

    /// A GraphQL client sending `token` (if any) as `Authorization: Bearer …`.
    pub fn client(&self, user: &str, token: Option<String>) -> Gql {
        Gql {
            http: reqwest::Client::new(),
            url: format!("{}/graphql", self.http_url),
            authorization: token.map(|t| format!("Bearer {t}")),
            user: user.to_owned(),
        }
    }

    /// A client with a raw `Authorization` header value.
    pub fn client_with_header(&self, authorization: &str) -> Gql {
        Gql {
            http: reqwest::Client::new(),
            url: format!("{}/graphql", self.http_url),
            authorization: Some(authorization.to_owned()),
            user: String::new(),
        }
    }

    /// No token.
    pub fn anonymous(&self) -> Gql {
        self.client("", None)
    }

    /// A new reader, named `label-<uuid>`.
    pub fn reader(&self, label: &str) -> Gql {
        let user = unique(label);
        let token = self.token(&user, &[], 3600);
        self.client(&user, Some(token))
    }

    /// A new administrator.
    pub fn admin(&self) -> Gql {
        let user = unique("librarian");
        let token = self.token(&user, &["admin"], 3600);
        self.client(&user, Some(token))
    }

    /// Opens a subscription over `graphql-transport-ws`, with `token` in `connection_init`.
    pub async fn subscribe(&self, token: Option<&str>, query: &str, variables: Value) -> Subscription {
        Subscription::open(&self.ws_url, token, query, variables).await
    }
}

/// `amqp://user:pass@host:port/<vhost>` from the test broker's URL, and the user to grant.
fn amqp_url_for_vhost(vhost: &str) -> (String, String) {
    let base = library_platform::test_support::amqp_url();
    let start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let end = base[start..].find('/').map(|i| start + i).unwrap_or(base.len());
    let user = base[start..end]
        .rsplit_once('@')
        .map(|(credentials, _)| credentials.split(':').next().unwrap_or("guest").to_owned())
        .unwrap_or_else(|| "guest".to_owned());
    (format!("{}/{vhost}", &base[..end]), user)
}

async fn rabbitmqctl(args: &[&str]) {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `rabbitmqctl` ({e}): the distributed tests give each system its own \
                 RabbitMQ vhost and must run where RabbitMQ runs, with rights to use rabbitmqctl"
            )
        });
    assert!(
        output.status.success(),
        "`rabbitmqctl {}` failed ({}): {}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// An HS256 token as the gateway expects it: `sub`, `exp`, `roles`.
pub fn sign_token(secret: &str, sub: &str, roles: &[&str], ttl_seconds: i64) -> String {
    let claims = json!({
        "sub": sub,
        "exp": chrono::Utc::now().timestamp() + ttl_seconds,
        "roles": roles,
    });
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign a token")
}

// ---------------------------------------------------------------------------------------------
// GraphQL over HTTP
// ---------------------------------------------------------------------------------------------

pub const LOAN_FIELDS: &str = "id userId bookId quantity returnedQuantity status borrowedAt dueAt lateFee cancelReason";
pub const BOOK_FIELDS: &str = "id isbn title author totalCopies availableCopies";
pub const BOOK_STOCK: &str = "subscription($bookId: ID!) { bookStock(bookId: $bookId) { id availableCopies } }";

/// The body of a GraphQL answer and its HTTP status.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    /// `data`, failing the test when there are errors.
    pub fn data(&self) -> &Value {
        assert_eq!(self.status, 200, "HTTP status; body: {}", self.body);
        assert!(
            self.body
                .get("errors")
                .is_none_or(|e| e.as_array().is_some_and(|a| a.is_empty())),
            "unexpected GraphQL errors: {}",
            self.body
        );
        &self.body["data"]
    }

    /// The first error's `extensions.code`.
    pub fn code(&self) -> Option<&str> {
        self.body["errors"][0]["extensions"]["code"].as_str()
    }

    /// The first error, failing the test unless its code is `code`. Every error message is also
    /// checked for internal detail.
    pub fn error(&self, code: &str) -> &Value {
        assert_eq!(
            self.code(),
            Some(code),
            "expected an error with code {code}; got: {}",
            self.body
        );
        for error in self.body["errors"].as_array().into_iter().flatten() {
            assert_no_internal_detail(error["message"].as_str().unwrap_or_default());
        }
        &self.body["errors"][0]
    }

    /// The first error's message, asserting its code.
    pub fn error_message(&self, code: &str) -> String {
        self.error(code)["message"].as_str().unwrap_or_default().to_owned()
    }
}

/// A client-facing message never carries SQL, stack traces or transport internals.
pub fn assert_no_internal_detail(message: &str) {
    let lower = message.to_lowercase();
    for leak in [
        "sqlx",
        "sea_orm",
        "sqlite",
        "postgres",
        "select ",
        "insert ",
        "panicked",
        "stack backtrace",
        "status {",
        "transport error",
        "tonic",
        "lapin",
        "database failure",
    ] {
        assert!(
            !lower.contains(leak),
            "error message leaks internal detail ({leak:?}): {message}"
        );
    }
}

/// GraphQL over HTTP as one user (or none).
#[derive(Clone)]
pub struct Gql {
    http: reqwest::Client,
    url: String,
    authorization: Option<String>,
    /// The token's subject (empty for anonymous).
    pub user: String,
}

impl Gql {
    /// The bearer token this client sends, if any.
    pub fn token(&self) -> Option<&str> {
        self.authorization.as_deref().and_then(|a| a.strip_prefix("Bearer "))
    }

    /// Posts a query; the answer whatever it is.
    pub async fn post(&self, query: &str, variables: Value) -> Reply {
        self.post_body(json!({ "query": query, "variables": variables }).to_string())
            .await
    }

    /// Posts a raw body as `application/json`.
    pub async fn post_body(&self, body: String) -> Reply {
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(authorization) = &self.authorization {
            request = request.header("authorization", authorization);
        }
        let response = request.send().await.expect("the gateway answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("read the answer");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply { status, body }
    }

    /// `data` of a query that must succeed.
    pub async fn ok(&self, query: &str, variables: Value) -> Value {
        self.post(query, variables).await.data().clone()
    }

    /// Registers a book with a unique title (needs an admin).
    pub async fn create_book(&self, title: &str, copies: i32) -> Value {
        let data = self
            .ok(
                &format!("mutation($input: CreateBookInput!) {{ createBook(input: $input) {{ {BOOK_FIELDS} }} }}"),
                json!({ "input": {
                    "title": unique(title),
                    "author": "E2E Author",
                    "totalCopies": copies,
                }}),
            )
            .await;
        data["createBook"].clone()
    }

    pub async fn book(&self, id: &str) -> Reply {
        self.post(
            &format!("query($id: ID!) {{ book(id: $id) {{ {BOOK_FIELDS} }} }}"),
            json!({ "id": id }),
        )
        .await
    }

    /// A book's available copies, for polling (an error is "not yet").
    pub async fn available_copies(&self, id: &str) -> Result<i64, String> {
        let reply = self.book(id).await;
        reply.body["data"]["book"]["availableCopies"]
            .as_i64()
            .ok_or_else(|| format!("book {id}: {}", reply.body))
    }

    pub async fn borrow(&self, book_id: &str, quantity: i64) -> Reply {
        self.post(
            &format!(
                "mutation($bookId: ID!, $quantity: Int!) {{ borrowBook(bookId: $bookId, quantity: $quantity) {{ {LOAN_FIELDS} }} }}"
            ),
            json!({ "bookId": book_id, "quantity": quantity }),
        )
        .await
    }

    pub async fn borrow_with_key(&self, book_id: &str, quantity: i64, key: &str) -> Reply {
        self.post(
            &format!(
                "mutation($bookId: ID!, $quantity: Int!, $key: String) {{ borrowBook(bookId: $bookId, quantity: $quantity, idempotencyKey: $key) {{ {LOAN_FIELDS} }} }}"
            ),
            json!({ "bookId": book_id, "quantity": quantity, "key": key }),
        )
        .await
    }

    /// A borrow that must be accepted; the loan.
    pub async fn borrow_ok(&self, book_id: &str, quantity: i64) -> Value {
        let loan = self.borrow(book_id, quantity).await.data()["borrowBook"].clone();
        assert_eq!(loan["quantity"], quantity, "borrowed quantity: {loan}");
        assert_eq!(loan["userId"], self.user.as_str(), "loan owner: {loan}");
        assert_eq!(loan["bookId"], book_id, "loan book: {loan}");
        let status = loan["status"].as_str().unwrap_or_default();
        assert!(
            status == "PENDING" || status == "ACTIVE",
            "a new loan is PENDING or ACTIVE: {loan}"
        );
        loan
    }

    pub async fn return_book(&self, loan_id: &str, quantity: Option<i64>) -> Reply {
        self.post(
            &format!(
                "mutation($loanId: ID!, $quantity: Int) {{ returnBook(loanId: $loanId, quantity: $quantity) {{ daysLate lateFee loan {{ {LOAN_FIELDS} }} }} }}"
            ),
            json!({ "loanId": loan_id, "quantity": quantity }),
        )
        .await
    }

    pub async fn loan(&self, id: &str) -> Reply {
        self.post(
            &format!("query($id: ID!) {{ loan(id: $id) {{ {LOAN_FIELDS} }} }}"),
            json!({ "id": id }),
        )
        .await
    }

    /// The loan's status, or what went wrong (for polling).
    pub async fn loan_status(&self, id: &str) -> String {
        let reply = self.loan(id).await;
        reply.body["data"]["loan"]["status"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("<no loan: {}>", reply.body))
    }

    /// Waits until the loan has `status`; the loan.
    pub async fn wait_loan_status(&self, id: &str, status: &str) -> Value {
        eventually(&format!("loan {id} becomes {status}"), TIMEOUT, || async {
            let reply = self.loan(id).await;
            let loan = &reply.body["data"]["loan"];
            if loan["status"] == status {
                Ok(loan.clone())
            } else {
                Err(reply.body.to_string())
            }
        })
        .await
    }

    pub async fn my_loans(&self, status: Option<&str>) -> Reply {
        self.post(
            &format!(
                "query($status: LoanStatus) {{ myLoans(status: $status, first: 100) {{ totalCount nodes {{ {LOAN_FIELDS} }} }} }}"
            ),
            json!({ "status": status }),
        )
        .await
    }

    pub async fn dashboard(&self) -> Reply {
        self.post("{ myDashboard { userId borrowedCount lateFeeTotal } }", json!({}))
            .await
    }

    /// (borrowedCount, lateFeeTotal), or (-1, -1) when the dashboard could not be read.
    pub async fn dashboard_counts(&self) -> (i64, i64) {
        let reply = self.dashboard().await;
        let d = &reply.body["data"]["myDashboard"];
        (
            d["borrowedCount"].as_i64().unwrap_or(-1),
            d["lateFeeTotal"].as_i64().unwrap_or(-1),
        )
    }

    /// Waits until the dashboard shows exactly these numbers.
    pub async fn wait_dashboard(&self, borrowed: i64, late_fees: i64) {
        eventually(
            &format!(
                "{}'s dashboard = {{borrowedCount: {borrowed}, lateFeeTotal: {late_fees}}}",
                self.user
            ),
            TIMEOUT,
            || async {
                let reply = self.dashboard().await;
                let d = &reply.body["data"]["myDashboard"];
                if d["borrowedCount"] == borrowed && d["lateFeeTotal"] == late_fees {
                    assert_eq!(d["userId"], self.user.as_str(), "dashboard owner");
                    Ok(())
                } else {
                    Err(reply.body.to_string())
                }
            },
        )
        .await
    }

    /// Waits until the book shows `copies` available.
    pub async fn wait_available(&self, book_id: &str, copies: i64) {
        eventually(
            &format!("book {book_id} has {copies} copies available"),
            TIMEOUT,
            || async {
                match self.available_copies(book_id).await {
                    Ok(n) if n == copies => Ok(()),
                    Ok(n) => Err(format!("availableCopies {n}")),
                    Err(e) => Err(e),
                }
            },
        )
        .await
    }
}

pub fn id_of(value: &Value) -> String {
    value["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {value}"))
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// GraphQL over WebSocket (graphql-transport-ws)
// ---------------------------------------------------------------------------------------------

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the server sent for a subscription.
#[derive(Debug)]
pub enum WsEvent {
    /// A `next` message's payload: a GraphQL response (`data`, maybe `errors`).
    Next(Value),
    /// An `error` message's payload: a list of GraphQL errors.
    Error(Value),
    Complete,
}

/// One subscription on its own connection.
pub struct Subscription {
    socket: Socket,
    id: String,
}

impl Subscription {
    /// Connects, sends `connection_init` (with `{"Authorization": "Bearer …"}` when there is a
    /// token), waits for `connection_ack`, then subscribes.
    pub async fn open(url: &str, token: Option<&str>, query: &str, variables: Value) -> Self {
        let mut request = url.into_client_request().expect("a WebSocket URL");
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("graphql-transport-ws"),
        );
        let (socket, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("WebSocket handshake with the gateway");
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some("graphql-transport-ws"),
            "the gateway speaks graphql-transport-ws"
        );
        let mut subscription = Subscription {
            socket,
            id: Uuid::new_v4().to_string(),
        };
        let payload = match token {
            Some(token) => json!({ "Authorization": format!("Bearer {token}") }),
            None => json!({}),
        };
        subscription
            .send(json!({ "type": "connection_init", "payload": payload }))
            .await;
        let ack = tokio::time::timeout(TIMEOUT, async {
            loop {
                let message = subscription.receive().await?;
                match message["type"].as_str() {
                    Some("connection_ack") => return Ok(()),
                    Some("ping") | Some("pong") => continue,
                    _ => return Err(format!("expected connection_ack, got {message}")),
                }
            }
        })
        .await;
        match ack {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => panic!("no connection_ack within {TIMEOUT:?}"),
        }
        let id = subscription.id.clone();
        subscription
            .send(json!({
                "id": id,
                "type": "subscribe",
                "payload": { "query": query, "variables": variables },
            }))
            .await;
        subscription
    }

    async fn send(&mut self, message: Value) {
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .expect("send on the WebSocket");
    }

    /// The next protocol message (answering pings), or why there is none.
    async fn receive(&mut self) -> Result<Value, String> {
        loop {
            match self.socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    let message: Value =
                        serde_json::from_str(text.as_str()).map_err(|e| format!("not JSON ({e}): {text}"))?;
                    if message["type"] == "ping" {
                        self.send(json!({ "type": "pong" })).await;
                        continue;
                    }
                    return Ok(message);
                }
                Some(Ok(Message::Close(frame))) => return Err(format!("closed: {frame:?}")),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("WebSocket error: {e}")),
                None => return Err("the connection ended".into()),
            }
        }
    }

    /// The next event of this subscription, waiting at most `timeout`.
    pub async fn try_event(&mut self, timeout: Duration) -> Result<WsEvent, String> {
        let id = self.id.clone();
        let received = tokio::time::timeout(timeout, async {
            loop {
                let message = self.receive().await?;
                if message["type"] == "pong" {
                    continue;
                }
                if message["id"] != id.as_str() {
                    return Err(format!("a message for another operation: {message}"));
                }
                return match message["type"].as_str() {
                    Some("next") => Ok(WsEvent::Next(message["payload"].clone())),
                    Some("error") => Ok(WsEvent::Error(message["payload"].clone())),
                    Some("complete") => Ok(WsEvent::Complete),
                    _ => Err(format!("unexpected message: {message}")),
                };
            }
        })
        .await;
        received.unwrap_or_else(|_| Err(format!("nothing within {timeout:?}")))
    }

    /// The next event, failing the test if none comes within [`TIMEOUT`].
    pub async fn event(&mut self) -> WsEvent {
        self.try_event(TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("subscription: {e}"))
    }

    /// The `data` of the next `next` message, failing the test on an error or the end.
    pub async fn next_data(&mut self) -> Value {
        match self.event().await {
            WsEvent::Next(payload) => {
                assert!(payload.get("errors").is_none(), "subscription errors: {payload}");
                payload["data"].clone()
            }
            other => panic!("expected a `next` message, got {other:?}"),
        }
    }

    /// Reads `next` messages until one's `data` satisfies `wanted`, within `timeout` in all;
    /// returns it and every value seen before it.
    pub async fn try_until(
        &mut self,
        timeout: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> Result<(Value, Vec<Value>), String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.try_event(left).await {
                Ok(WsEvent::Next(payload)) if payload.get("errors").is_none() => {
                    let data = payload["data"].clone();
                    if wanted(&data) {
                        return Ok((data, seen));
                    }
                    seen.push(data);
                }
                Ok(other) => return Err(format!("{other:?} after {seen:?}")),
                Err(e) => return Err(format!("{e}; seen {seen:?}")),
            }
        }
    }

    /// [`Self::try_until`] within [`TIMEOUT`], failing the test with `what`.
    pub async fn until(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> (Value, Vec<Value>) {
        self.try_until(TIMEOUT, wanted)
            .await
            .unwrap_or_else(|e| panic!("subscription never showed {what}: {e}"))
    }
}

/// Prints the system's logs if the test fails while this guard lives (for the shared system,
/// which is never dropped).
pub struct LogsOnPanic<'a>(pub &'a System);

impl Drop for LogsOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.print_logs();
        }
    }
}
