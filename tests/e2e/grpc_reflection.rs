//! gRPC server reflection as standard clients use it (CONTRACT, "What standard clients can rely
//! on"): every server answers `grpc.reflection.v1` and `v1alpha`, lists only the services it
//! serves (and health and reflection), and each listed service resolves with every file it
//! imports. In the all-in-one, each service's port lists its own service only.
//!
//! Asked with tonic-reflection's v1 and v1alpha clients, and with Python's standard
//! `grpcio-reflection` client (`tests/grpc-clients/reflection_check.py`; set
//! `LIBRARY_SKIP_PYTHON_CLIENTS=1` to skip it where Python cannot be installed).

use std::path::Path;

use crate::helpers::{System, free_port};

/// Each service's process name, the variable it listens on, and the one service it serves.
const SERVICES: [(&str, &str, &str); 3] = [
    ("book-svc", "BOOK_GRPC_ADDR", "library.book.v1.BookService"),
    ("borrow-svc", "BORROW_GRPC_ADDR", "library.borrow.v1.BorrowService"),
    (
        "dashboard-svc",
        "DASHBOARD_GRPC_ADDR",
        "library.dashboard.v1.DashboardService",
    ),
];

/// An all-in-one whose services listen on ports chosen here, with each port's service.
async fn all_in_one() -> (System, Vec<(u16, &'static str)>) {
    let ports: Vec<(u16, &str, &str)> = SERVICES
        .iter()
        .map(|(_, variable, service)| (free_port(), *variable, *service))
        .collect();
    let addrs: Vec<(&str, String)> = ports
        .iter()
        .map(|(port, variable, _)| (*variable, format!("127.0.0.1:{port}")))
        .collect();
    let settings: Vec<(&str, &str)> = addrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let system = System::all_in_one_with(&settings).await;
    (
        system,
        ports.into_iter().map(|(port, _, service)| (port, service)).collect(),
    )
}

/// The shared distributed system's service ports, with each port's service.
async fn distributed() -> (&'static System, Vec<(u16, &'static str)>) {
    let system = System::shared_distributed().await;
    let mut ports = Vec::new();
    for (process, _, service) in SERVICES {
        ports.push((system.grpc_port(process).await, service));
    }
    (system, ports)
}

async fn rust_clients(ports: &[(u16, &str)]) {
    for (port, service) in ports {
        let url = format!("http://127.0.0.1:{port}");
        if let Err(why) = library_platform::test_support::reflection::check(&url, &[service]).await {
            panic!("{service}'s server: {why}");
        }
    }
}

/// How to get the Python client, for the failure messages.
const INSTALL: &str = "pip install -r tests/grpc-clients/requirements.txt \
    (or set LIBRARY_SKIP_PYTHON_CLIENTS=1 to skip the Python client checks)";

/// Whether to run the Python client: not when `LIBRARY_SKIP_PYTHON_CLIENTS=1`; otherwise
/// Python and grpcio-reflection must be there, and the test fails saying how to install them.
async fn python_wanted() -> bool {
    if std::env::var("LIBRARY_SKIP_PYTHON_CLIENTS").is_ok_and(|v| v == "1") {
        eprintln!("LIBRARY_SKIP_PYTHON_CLIENTS=1: the grpcio-reflection checks are skipped");
        return false;
    }
    let probe = tokio::process::Command::new("python3")
        .args(["-c", "import grpc, grpc_reflection"])
        .output()
        .await
        .unwrap_or_else(|e| panic!("python3 cannot be run ({e}): install Python 3, then {INSTALL}"));
    let stderr = String::from_utf8_lossy(&probe.stderr);
    assert!(
        probe.status.success(),
        "Python's grpcio-reflection is missing ({}): {INSTALL}",
        stderr.lines().last().unwrap_or_default()
    );
    true
}

/// Runs `tests/grpc-clients/reflection_check.py` against each port.
async fn python_client(ports: &[(u16, &str)]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (port, service) in ports {
        let run = tokio::process::Command::new("python3")
            .arg(root.join("tests/grpc-clients/reflection_check.py"))
            .arg(format!("127.0.0.1:{port}"))
            .arg(service)
            .current_dir(root)
            .output()
            .await
            .expect("run reflection_check.py");
        assert!(
            run.status.success(),
            "grpcio-reflection against {service}'s server ({}):\n{}{}",
            run.status,
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
    }
}

mod rust_v1_and_v1alpha_clients {
    #[tokio::test]
    async fn all_in_one() {
        let (_system, ports) = super::all_in_one().await;
        super::rust_clients(&ports).await;
    }

    #[tokio::test]
    async fn distributed() {
        let (system, ports) = super::distributed().await;
        let _logs = crate::helpers::LogsOnPanic(system);
        super::rust_clients(&ports).await;
    }
}

mod python_grpcio_reflection {
    #[tokio::test]
    async fn all_in_one() {
        if !super::python_wanted().await {
            return;
        }
        let (_system, ports) = super::all_in_one().await;
        super::python_client(&ports).await;
    }

    #[tokio::test]
    async fn distributed() {
        if !super::python_wanted().await {
            return;
        }
        let (system, ports) = super::distributed().await;
        let _logs = crate::helpers::LogsOnPanic(system);
        super::python_client(&ports).await;
    }
}
