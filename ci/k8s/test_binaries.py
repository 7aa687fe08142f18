"""The manifests agree with the binaries.

For each of the four Deployments of the dev overlay, the real binary (from LIBRARY_BIN_DIR, e.g.
target/debug) is started as a local process with exactly the environment the manifest gives its
container: literal values, ConfigMap values (envFrom, configMapKeyRef) and the generated Secret
placeholders, decoded. Only these local rewrites are made:

- host names of in-cluster Services (book-svc, postgres, rabbitmq, ..., and any *.svc or
  *.svc.cluster.local name, such as the trace collector's) become 127.0.0.1;
- DATABASE_URL becomes a fresh database on the server of TEST_POSTGRES_URL (default
  postgres://postgres@127.0.0.1:5432), dropped afterwards; AMQP_URL becomes TEST_AMQP_URL's
  broker (default amqp://guest:guest@127.0.0.1:5672/%2f), in a vhost of this run when
  rabbitmqctl can make one, else in TEST_AMQP_URL's own vhost;
- every volumeMount's path (and so LIBRARY_AUDIT_DIR) becomes a temporary directory;
- every port a server Deployment declares gets a free local port (the local processes share one
  network, and the real ports may be taken, e.g. 50052 as the source port of an outgoing
  connection): a port only one Deployment declares gets one port for the run, and addresses of
  its Service (book-svc:50051) follow it; a port several declare (9464, where every gRPC service
  serves /metrics) gets one for each process. `Pod.port` tells which, and the probes and checks
  below go through it.

As the kubelet would, the process runs as the pod's runAsUser/runAsGroup (when this runs as
root), with HOSTNAME set to a pod name, in a working directory it cannot write (the read-only
root filesystem). Then its startup, readiness and liveness probes are run as the kubelet runs
them (grpc.health.v1.Health/Check, or HTTP GET), and the Services' targetPorts are checked
against the ports the process really listens on. A renamed variable or port fails: every
variable the manifest sets must be one the binary's --help lists, and each server must listen
where its listen-address variable says. Each server serves Prometheus /metrics where its pod's
prometheus.io annotations say, and the gRPC services count the calls they answered there.

Bad input: a missing required variable, or a malformed value, must stop the binary at once with a
non-zero exit and one error line naming the variable (a JSON line, as Loki reads them), not a
panic or clap's usage text. SIGTERM under load: readiness must fail first (while the server is
still up), the requests keep being answered for the shutdown delay, none that started before
readiness failed is lost, and the process exits 0 within the grace period left after the preStop
sleep.

Needs: LIBRARY_BIN_DIR, PostgreSQL (TEST_POSTGRES_URL; trust authentication for `postgres`, and
`psql`), RabbitMQ (TEST_AMQP_URL; rabbitmqctl, as root or through sudo, for a vhost of the run).
The servers listen on free ports below the kernel's ephemeral range, not on the ones declared.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from k8s_model import (
    DEV,
    SERVERS,
    container_port,
    image_parts,
    pod_spec,
    prestop_sleep_seconds,
    probes,
    render,
)

# The backing services, as ci/test.sh passes them (and with its defaults).
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL") or "postgres://postgres@127.0.0.1:5432"
AMQP_URL = os.environ.get("TEST_AMQP_URL") or "amqp://guest:guest@127.0.0.1:5672/%2f"
POSTGRES = (urlsplit(POSTGRES_URL).hostname or "127.0.0.1", urlsplit(POSTGRES_URL).port or 5432)
RABBITMQ = (urlsplit(AMQP_URL).hostname or "127.0.0.1", urlsplit(AMQP_URL).port or 5672)
# What the image gives every process (distroless: PATH only); the kubelet adds HOSTNAME.
IMAGE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
# Which variable sets each server's listen address (CONTRACT.md).
LISTEN_VARIABLES = {
    "book-svc": "BOOK_GRPC_ADDR",
    "borrow-svc": "BORROW_GRPC_ADDR",
    "dashboard-svc": "DASHBOARD_GRPC_ADDR",
    "graphql-gateway": "GATEWAY_HTTP_ADDR",
}
# Variables a standalone server cannot start without (CONTRACT.md).
REQUIRED = [
    ("book-svc", "AMQP_URL"),
    ("borrow-svc", "AMQP_URL"),
    ("dashboard-svc", "AMQP_URL"),
    ("graphql-gateway", "LIBRARY_JWT_SECRET"),
]
# A malformed value for one setting of each server (CONTRACT.md and --help).
MALFORMED = [
    ("book-svc", "BOOK_GRPC_ADDR", "nope"),
    ("book-svc", "METRICS_ADDR", "nope"),
    ("borrow-svc", "LIBRARY_LOAN_DAYS", "x"),
    ("borrow-svc", "BORROW_GRPC_ADDR", "nope"),
    ("dashboard-svc", "DASHBOARD_GRPC_ADDR", "nope"),
    ("dashboard-svc", "LIBRARY_SHUTDOWN_DELAY", "soon"),
    ("graphql-gateway", "GATEWAY_HTTP_ADDR", "nope"),
    ("graphql-gateway", "LOG_FORMAT", "xml"),
]
# How long a server that lacks a required variable, or has a malformed one, may take to give up.
REFUSAL_SECONDS = 30

# SIGTERM under load. Each gRPC server gets a cheap real call (proto/library/*/v1/*.proto) as raw
# protobuf, b"" being the empty request; the gateway a GraphQL query that reaches book-svc.
LOAD_CALLS = {
    "book-svc": "/library.book.v1.BookService/ListBooks",
    "borrow-svc": "/library.borrow.v1.BorrowService/ListLoans",
    "dashboard-svc": "/library.dashboard.v1.DashboardService/GetDashboard",
}
GATEWAY_QUERY = "{ books(first: 5) { totalCount } }"
LOAD_THREADS = 4
CALL_TIMEOUT = 5.0
# How often the readiness probe runs while the server stops (the kubelet's period is longer;
# this is to see when it turns).
PROBE_INTERVAL = 0.1
# How grpcio reports a call no server answered: a broken or refused connection (UNAVAILABLE, or
# UNKNOWN / INTERNAL for a stream cut mid-way), or no reply in time. A refusal such as
# INVALID_ARGUMENT or NOT_FOUND is an answer.
NO_ANSWER = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
}


# --- environment of the test ------------------------------------------------------------------


@pytest.fixture(scope="session")
def manifests():
    return render(DEV)


@pytest.fixture(scope="session")
def scratch():
    """A temporary directory the pods' UID can traverse (pytest's own is private to root)."""
    directory = Path(tempfile.mkdtemp(prefix="library-k8s-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def pod_dir(scratch, request):
    directory = scratch / request.node.name.replace("/", "_").replace("[", "-").rstrip("]")
    directory.mkdir(mode=0o755)
    return directory


@pytest.fixture(scope="session")
def binaries(manifests, scratch) -> dict[str, Path]:
    """Deployment name -> the binary its image runs (the image's last path component).

    The binaries are copied, world-executable, into the scratch directory: the pod's UID must
    be able to run them, and a concurrent `cargo build` must not swap them mid-test."""
    bin_dir = os.environ.get("LIBRARY_BIN_DIR")
    if not bin_dir:
        pytest.fail(
            "LIBRARY_BIN_DIR is not set: point it at the directory holding the built binaries "
            "(book-svc, borrow-svc, dashboard-svc, graphql-gateway), e.g. "
            "LIBRARY_BIN_DIR=target/debug after `cargo build`. This test does not skip."
        )
    directory = Path(bin_dir)
    if not directory.is_absolute():
        directory = (Path.cwd() / directory).resolve()
    found, missing = {}, []
    for name in SERVERS:
        repository, _, _ = image_parts(manifests.server_container(name)["image"])
        binary = directory / repository.rsplit("/", 1)[-1]
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            missing.append(str(binary))
        found[name] = binary
    if missing:
        pytest.fail(f"LIBRARY_BIN_DIR={bin_dir}: no executable {', '.join(missing)}")
    copies = scratch / "bin"
    copies.mkdir(mode=0o755)
    for name, binary in found.items():
        copy = copies / binary.name
        shutil.copy2(binary, copy)
        copy.chmod(0o755)
        found[name] = copy
    return found


@pytest.fixture(scope="session")
def backing_services():
    for name, address in (("PostgreSQL", POSTGRES), ("RabbitMQ", RABBITMQ)):
        if not _can_connect(address):
            pytest.fail(f"{name} is not reachable on {address[0]}:{address[1]}")
    if shutil.which("psql") is None:
        pytest.fail("psql not found (Debian: apt-get install postgresql-client)")


@pytest.fixture(scope="session")
def amqp_url(backing_services, pytestconfig):
    """The broker the servers get: a RabbitMQ vhost of this run only when rabbitmqctl can make
    one (the servers declare the contract's durable queues, which must neither outlive the run
    nor meet another system's messages), else TEST_AMQP_URL as it is (a broker in a service
    container, as in the pipelines, without a usable rabbitmqctl). The name starts like
    ci/test.sh's vhosts, so its next run removes one a killed run left."""
    url = urlsplit(AMQP_URL)
    vhost = f"library_test_k8s_{uuid.uuid4().hex[:10]}"
    created, why_not = _add_vhost(vhost, unquote(url.username or "guest"))
    if not created:
        _report(pytestconfig, f"RabbitMQ: {why_not}; the servers use TEST_AMQP_URL's vhost "
                              f"{unquote(url.path[1:]) or '/'!r} as it is")
        yield AMQP_URL
        return
    _report(pytestconfig, f"RabbitMQ: the servers use the vhost {vhost} of this run (rabbitmqctl)")
    try:
        yield urlunsplit(url._replace(path="/" + quote(vhost, safe="")))
    finally:
        _rabbitmqctl("delete_vhost", vhost)


def _add_vhost(vhost: str, user: str) -> tuple[bool, str]:
    """Creates `vhost` with every permission for `user`; (False, why) when that cannot be done."""
    if RABBITMQ[0] not in ("127.0.0.1", "localhost", "::1"):
        return False, f"the broker is not local ({RABBITMQ[0]}), so rabbitmqctl cannot manage it"
    added = _rabbitmqctl("add_vhost", vhost)
    if added is None:
        return False, "no rabbitmqctl"
    if added.returncode != 0:
        return False, f"`rabbitmqctl add_vhost` failed: {(added.stderr or added.stdout).strip()[:200]}"
    granted = _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    if granted is None or granted.returncode != 0:
        _rabbitmqctl("delete_vhost", vhost)
        return False, f"`rabbitmqctl set_permissions` failed for {user}"
    return True, ""


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess | None:
    """`rabbitmqctl -q ARGS` as ci/test.sh's `as_root` runs it: directly as root, else through
    sudo when there is one (never asking for a password). None without rabbitmqctl."""
    if shutil.which("rabbitmqctl") is None:
        return None
    sudo = ["sudo", "-n"] if os.geteuid() != 0 and shutil.which("sudo") else []
    try:
        return subprocess.run([*sudo, "rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, 1, "", "rabbitmqctl timed out")


def _report(config, message: str):
    """A line in pytest's own output, past its capture of the tests' output."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print(message)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(message)


@pytest.fixture(scope="session")
def databases(backing_services, amqp_url):
    """Creates fresh databases on demand; drops them all at the end. Also carries the run's
    broker URL (`databases.amqp_url`), the other backing service a pod is given."""
    created = []

    def create(service: str) -> str:
        name = f"k8s_{service.replace('-', '_')}_{uuid.uuid4().hex[:10]}"
        _psql(f'CREATE DATABASE "{name}"')
        created.append(name)
        return _database_url(name)

    create.amqp_url = amqp_url
    yield create
    # Each DROP waits for a checkpoint (about a second); sent at once, they share one.
    drops = [_psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', wait=False) for name in created]
    for drop in drops:
        drop.wait(timeout=60)


def _database_url(database: str) -> str:
    """`database` on the server of TEST_POSTGRES_URL."""
    return urlunsplit(urlsplit(POSTGRES_URL)._replace(path="/" + database))


def _psql(sql: str, wait: bool = True) -> subprocess.Popen:
    """Runs `sql` in the server's `postgres` database; fails the test if it fails (`wait`), else
    returns the running psql."""
    psql = subprocess.Popen(
        ["psql", "-d", _database_url("postgres"), "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if wait else subprocess.DEVNULL,
        stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
    )
    if wait:
        output, _ = psql.communicate(timeout=60)
        assert psql.returncode == 0, f"psql -c {sql!r}: {output}"
    return psql


# --- one server as a local "pod" --------------------------------------------------------------


@dataclass
class Pod:
    name: str  # the Deployment
    binary: Path
    deployment: dict
    container: dict
    env: dict[str, str]
    workdir: Path
    mounts: dict[str, Path] = field(default_factory=dict)
    # A declared containerPort -> the port this process was given instead (see the module's doc).
    moved_ports: dict[int, int] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    def port(self, declared: int) -> int:
        """Where this process serves what its manifest declares on `declared`."""
        return self.moved_ports.get(declared, declared)

    @property
    def serving_port(self) -> int:
        """Where this process serves its API (the container's first port)."""
        return self.port(self.container["ports"][0]["containerPort"])

    @property
    def stdout_path(self) -> Path:
        return self.workdir / "stdout.log"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "stderr.log"

    def output(self) -> str:
        parts = []
        for path in (self.stdout_path, self.stderr_path):
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def tail(self, lines: int = 40) -> str:
        text = self.output().strip().splitlines()
        return "\n".join(text[-lines:]) or "(no output)"


def make_pod(manifests, binaries, databases, name: str, tmp_root: Path, *, drop=(), override=None) -> Pod:
    deployment = manifests.deployment(name)
    container = manifests.server_container(name)
    pod_name = f"{name}-7d9f8b6c5d-k8s{uuid.uuid4().hex[:5]}"
    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=tmp_root))
    workdir.chmod(0o755)
    spec = pod_spec(deployment)
    uid, gid = _pod_identity(spec)

    env = manifests.container_env(container, {"metadata.name": pod_name, "status.podIP": "127.0.0.1"})
    shared = _shared_ports(manifests)
    moved_ports = {}
    for declared in (p["containerPort"] for p in container.get("ports") or []):
        moved_ports[declared] = _free_port() if declared in shared else _run_port(declared)
    env = {k: _localize(v, manifests, moved_ports) for k, v in env.items()}
    if "DATABASE_URL" in env:
        env["DATABASE_URL"] = databases(name)
    if "AMQP_URL" in env:
        env["AMQP_URL"] = databases.amqp_url

    mounts = {}
    for mount in container.get("volumeMounts") or []:
        local = workdir / "volumes" / mount["name"]
        local.mkdir(parents=True)
        if uid is not None:
            os.chown(local, uid, gid)  # fsGroup: the pod may write its volumes
        mounts[mount["mountPath"]] = local
    for key, value in list(env.items()):
        for path, local in mounts.items():
            if value == path or value.startswith(path.rstrip("/") + "/"):
                env[key] = str(local) + value[len(path.rstrip("/")):]

    for key in drop:
        env.pop(key, None)
    env.update(override or {})
    env = {**IMAGE_ENV, "HOSTNAME": pod_name, **env}
    return Pod(name, binaries[name], deployment, container, env, workdir, mounts, moved_ports)


def _shared_ports(manifests) -> set[int]:
    """containerPorts that more than one server Deployment declares."""
    declared = [
        {p["containerPort"] for p in manifests.server_container(name).get("ports") or []} for name in SERVERS
    ]
    return {port for port in set().union(*declared) if sum(port in ports for ports in declared) > 1}


def start(pod: Pod, args=()) -> Pod:
    root = pod.workdir / "rootfs"  # the read-only root filesystem, as working directory
    root.mkdir()
    root.chmod(0o555)
    uid, gid = _pod_identity(pod_spec(pod.deployment))
    stdout = open(pod.stdout_path, "wb")
    stderr = open(pod.stderr_path, "wb")
    try:
        pod.process = subprocess.Popen(
            [str(pod.binary), *args],
            env=pod.env,
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            preexec_fn=(lambda: _become(uid, gid)) if uid is not None else None,
            start_new_session=True,
        )
    finally:
        stdout.close()
        stderr.close()
    return pod


def stop(pod: Pod, sig=signal.SIGKILL):
    if pod.process and pod.process.poll() is None:
        pod.process.send_signal(sig)
        try:
            pod.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pod.process.kill()
            pod.process.wait()


def _pod_identity(spec: dict) -> tuple[int | None, int | None]:
    """The UID/GID to run as: the pod's, when this process may switch (root)."""
    if os.geteuid() != 0:
        return None, None
    sc = spec.get("securityContext") or {}
    return sc.get("runAsUser", 65534), sc.get("runAsGroup", sc.get("runAsUser", 65534))


def _become(uid: int, gid: int):
    os.setgroups([gid])
    os.setgid(gid)
    os.setuid(uid)


def _cluster_hosts(manifests) -> set[str]:
    hosts = set()
    for svc in manifests.of_kind("Service"):
        name, ns = svc["metadata"]["name"], svc["metadata"].get("namespace", "default")
        hosts |= {name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"}
    return hosts


def _is_cluster_host(host: str | None, manifests) -> bool:
    if not host:
        return False
    host = host.rstrip(".")
    return host in _cluster_hosts(manifests) or host.endswith((".svc", ".svc.cluster.local"))


def _localize(value: str, manifests, own_ports: dict[int, int]) -> str:
    """In-cluster host names -> 127.0.0.1, in URLs and in bare host:port values, with a server's
    Service port -> the local port of the port it targets; this pod's own listen addresses
    (host:port without a scheme) -> its local ports."""
    if "://" in value:
        url = urlsplit(value)
        if _is_cluster_host(url.hostname, manifests):
            userinfo = url.netloc.rsplit("@", 1)[0] + "@" if "@" in url.netloc else ""
            port = f":{_service_port(url.hostname, url.port, manifests)}" if url.port else ""
            return urlunsplit(url._replace(netloc=f"{userinfo}127.0.0.1{port}"))
        return value
    host, sep, port = value.rpartition(":")
    if sep and port.isdigit() and _is_cluster_host(host, manifests):
        return f"127.0.0.1:{_service_port(host, int(port), manifests)}"
    if sep and "/" not in value and port.isdigit() and int(port) in own_ports:
        return f"{host}:{own_ports[int(port)]}"
    return value


def _service_port(host: str, port: int, manifests) -> int:
    """The local port behind `host:port` when host names a server's Service; else `port`."""
    service = manifests.find("Service", host.rstrip(".").split(".")[0])
    if service is None:
        return port
    for workload in manifests.workloads_selected_by(service):
        name = workload["metadata"]["name"]
        if workload.get("kind") != "Deployment" or name not in SERVERS:
            continue
        for entry in service["spec"]["ports"]:
            if entry["port"] == port:
                target = container_port(manifests.server_container(name), entry.get("targetPort", port))
                return _run_port(target)
    return port


# --- probes, as the kubelet runs them ---------------------------------------------------------


def run_probe(pod: Pod, probe: dict) -> tuple[bool, str]:
    answered, ok, detail = probe_once(pod, probe)
    return answered and ok, detail


def probe_once(pod: Pod, probe: dict) -> tuple[bool, bool, str]:
    """One probe, on a new connection as the kubelet makes it: (answered, succeeded, detail).
    Not answered: nothing listens, or the connection broke or timed out."""
    timeout = probe.get("timeoutSeconds", 1)
    container = pod.container
    try:
        if "grpc" in probe:
            status = health_status(pod.port(probe["grpc"]["port"]), probe["grpc"].get("service", ""), timeout)
            return True, status == "SERVING", status
        if "httpGet" in probe:
            get = probe["httpGet"]
            port = pod.port(container_port(container, get["port"]))
            request = urllib.request.Request(f"http://127.0.0.1:{port}{get.get('path', '/')}")
            for header in get.get("httpHeaders") or []:
                request.add_header(header["name"], header["value"])
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            try:
                with opener.open(request, timeout=timeout) as response:
                    return True, 200 <= response.status < 400, f"HTTP {response.status}"
            except urllib.error.HTTPError as e:
                return True, 200 <= e.code < 400, f"HTTP {e.code}"
        if "tcpSocket" in probe:
            port = pod.port(container_port(container, probe["tcpSocket"]["port"]))
            connected = _can_connect(("127.0.0.1", port), timeout)
            return connected, connected, "tcp"
        return False, False, f"unsupported probe {sorted(probe)}"
    except grpc.RpcError as e:
        return e.code() not in NO_ANSWER, False, f"{e.code().name}: {e.details()}"
    except OSError as e:
        return False, False, f"{type(e).__name__}: {e}"


def grpc_channel(port: int) -> grpc.Channel:
    """A channel with a connection of its own (grpcio shares them between channels by default)."""
    return grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.enable_http_proxy", 0), ("grpc.use_local_subchannel_pool", 1)]
    )


def health_status(port: int, service: str, timeout: float) -> str:
    """grpc.health.v1.Health/Check of `service` ("" for the whole server): SERVING, NOT_SERVING, ..."""
    with grpc_channel(port) as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def await_probe(pod: Pod, kind: str, budget: float | None = None) -> str:
    """Polls `kind` until it succeeds, within the time the kubelet would allow."""
    probe = probes(pod.container)[kind]
    if budget is None:
        budget = probe.get("initialDelaySeconds", 0) + probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
    deadline = time.monotonic() + budget
    last = "never ran"
    while True:
        if pod.process.poll() is not None:
            pytest.fail(f"{pod.name} exited with {pod.process.returncode} before its {kind} passed:\n{pod.tail()}")
        ok, last = run_probe(pod, probe)
        if ok:
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"{pod.name}: {kind} still failing after {budget:.0f}s ({last}):\n{pod.tail()}")
        time.sleep(0.25)


def listening_ports(pid: int) -> set[int]:
    """TCP ports the process (any thread) listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _can_connect(address, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False


# Below the kernel's ephemeral range (32768+ on Linux): a port handed out by bind(0) can be
# handed out again as the source port of an outgoing connection before the server binds it.
_PORTS = itertools.count(os.getpid() * 97 % 12_000)


def _free_port() -> int:
    for _ in range(12_000):
        port = 20_000 + next(_PORTS) % 12_000
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000..32000")


_RUN_PORTS: dict[int, int] = {}


def _run_port(declared: int) -> int:
    """The local port of a port only one Deployment declares, the same for the whole run."""
    if declared not in _RUN_PORTS:
        _RUN_PORTS[declared] = _free_port()
    return _RUN_PORTS[declared]


# --- the running system -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def system(manifests, binaries, databases, scratch):
    """The four servers, started in dependency order, each past its startup probe."""
    tmp_root = scratch / "system"
    tmp_root.mkdir(mode=0o755)
    pods: dict[str, Pod] = {}
    try:
        for name in SERVERS:
            pod = make_pod(manifests, binaries, databases, name, tmp_root)
            for port in (pod.port(p["containerPort"]) for p in pod.container["ports"]):
                if _can_connect(("127.0.0.1", port)):
                    pytest.fail(f"port {port} is already in use: {name} could not bind it")
            pods[name] = start(pod)
            await_probe(pod, "startupProbe")
        yield pods
    finally:
        for pod in reversed(list(pods.values())):
            stop(pod)


def test_help_lists_every_variable_the_manifest_sets(manifests, binaries):
    """A renamed variable fails here: the binary would silently ignore it."""
    for name in SERVERS:
        container = manifests.server_container(name)
        result = subprocess.run([str(binaries[name]), "--help"], capture_output=True, text=True, timeout=30,
                                env=IMAGE_ENV)
        assert result.returncode == 0, f"{name} --help: {result.stderr}"
        names = set(manifests.container_env(container, {"metadata.name": "x", "status.podIP": "x"}))
        # clap prints each setting's variable as `[env: NAME=…]`, or `[env: NAME]` when it
        # hides the value (a secret).
        listed = set(re.findall(r"\[env: ([A-Za-z_][A-Za-z0-9_]*)[=\]]", result.stdout))
        assert listed, f"{name} --help lists no environment variable:\n{result.stdout}"
        unknown = sorted(names - listed)
        assert not unknown, f"{name}: the manifest sets {unknown}, which `{name} --help` does not list"


@pytest.mark.parametrize("server,variable", REQUIRED, ids=[f"{s}-{v}" for s, v in REQUIRED])
def test_a_missing_required_variable_stops_the_server_with_a_line_naming_it(
    manifests, binaries, databases, pod_dir, server, variable
):
    # Any port will do: it must not get as far as serving.
    listen = {LISTEN_VARIABLES[server]: f"127.0.0.1:{_free_port()}"}
    pod = make_pod(manifests, binaries, databases, server, pod_dir, drop=[variable], override=listen)
    assert variable not in pod.env
    lines = refusal(pod, f"{server} without {variable}")
    # Lines before it (such as the start's) are fine; one says what is wrong.
    errors = [line for line in lines if log_level(line) == "ERROR"]
    assert len(errors) == 1, f"{server} without {variable}: {len(errors)} error lines, not one:\n{pod.tail()}"
    assert variable in errors[0], f"{server} without {variable}: the error does not name it:\n{errors[0]}"
    if pod.env.get("LOG_FORMAT", "").lower() == "json":
        for line in lines:
            assert json_object(line), f"{server} without {variable}: not a JSON log line: {line[:200]}"


@pytest.mark.parametrize("server,variable,value", MALFORMED, ids=[f"{s}-{v}={x}" for s, v, x in MALFORMED])
def test_a_malformed_setting_stops_the_server_with_one_line_naming_it(
    manifests, binaries, databases, pod_dir, server, variable, value
):
    listen = {LISTEN_VARIABLES[server]: f"127.0.0.1:{_free_port()}"}
    pod = make_pod(manifests, binaries, databases, server, pod_dir, override={**listen, variable: value})
    what = f"{server} with {variable}={value}"
    lines = refusal(pod, what)
    assert len(lines) == 1, f"{what}: {len(lines)} lines of output, not one:\n{pod.tail()}"
    [line] = lines
    assert log_level(line) == "ERROR", f"{what}: not an error line: {line}"
    assert variable in line, f"{what}: the line does not name {variable}: {line}"
    # With the manifest's LOG_FORMAT=json, the refusal is a JSON line like every other, for Loki.
    if variable != "LOG_FORMAT" and pod.env.get("LOG_FORMAT", "").lower() == "json":
        record = json_object(line)
        assert record and record.get("level") == "ERROR", f"{what}: not a JSON error line: {line}"


def refusal(pod: Pod, what: str) -> list[str]:
    """Starts `pod`, which must refuse to run: it exits non-zero within REFUSAL_SECONDS, without
    a panic or clap's usage text. Its output lines (stdout and stderr; blank ones left out)."""
    start(pod)
    try:
        code = pod.process.wait(timeout=REFUSAL_SECONDS)
    except subprocess.TimeoutExpired:
        stop(pod)
        pytest.fail(f"{what} still runs after {REFUSAL_SECONDS}s:\n{pod.tail()}")
    output = pod.output()
    assert code != 0, f"{what} exited 0:\n{pod.tail()}"
    assert "panicked" not in output, f"{what} panicked instead of reporting:\n{pod.tail()}"
    lines = [line for line in output.splitlines() if line.strip()]
    usage = [line for line in lines if re.search(r"Usage:|For more information", _plain(line))]
    assert not usage, f"{what}: clap's usage text instead of one line:\n{pod.tail()}"
    return lines


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _plain(line: str) -> str:
    return _ANSI.sub("", line).strip()


def json_object(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def log_level(line: str) -> str | None:
    """The level of a log line: a JSON line's `level`, or the level after the timestamp of
    tracing's text format (colours or not); `error: ...` counts as ERROR."""
    record = json_object(line)
    if record is not None:
        return str(record.get("level", "")).upper() or None
    plain = _plain(line)
    found = re.match(r"(?:\S+\s+)?(TRACE|DEBUG|INFO|WARN|ERROR)\b", plain)
    if found:
        return found.group(1)
    return "ERROR" if re.match(r"error\b", plain, re.IGNORECASE) else None


@pytest.mark.parametrize("name", SERVERS)
def test_server_starts_and_passes_its_probes(system, name):
    pod = system[name]
    await_probe(pod, "readinessProbe", budget=30)
    await_probe(pod, "livenessProbe")


@pytest.mark.parametrize("name", SERVERS)
def test_service_target_ports_are_the_ports_the_server_listens_on(system, manifests, name):
    pod = system[name]
    listening = listening_ports(pod.process.pid)
    declared = {pod.port(p["containerPort"]) for p in pod.container["ports"]}
    moved = f" (here {pod.moved_ports})" if pod.moved_ports else ""
    assert declared <= listening, f"{name} declares {sorted(declared)}{moved} but listens on {sorted(listening)}"
    assert listening <= declared, f"{name} listens on undeclared ports {sorted(listening - declared)}{moved}"
    services = manifests.services_selecting(pod.deployment)
    assert services, f"no Service selects {name}"
    for svc in services:
        for port in svc["spec"]["ports"]:
            target = pod.port(container_port(pod.container, port.get("targetPort", port["port"])))
            assert target in listening, f"Service {svc['metadata']['name']} targets {target}: nothing listens"
    for kind, probe in probes(pod.container).items():
        port = (probe.get("grpc") or {}).get("port") or container_port(
            pod.container, (probe.get("httpGet") or probe.get("tcpSocket"))["port"]
        )
        assert pod.port(port) in listening, f"{name} {kind} probes port {port}: nothing listens"


@pytest.mark.parametrize("name", SERVERS)
def test_server_logs_json_lines_for_loki(system, name):
    """LOG_FORMAT=json: one object a line, with the `level` and `target` Promtail labels."""
    lines = [line for line in system[name].stdout_path.read_text().splitlines() if line.strip()]
    assert lines, f"{name} logged nothing on stdout"
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"{name}: not a JSON log line: {line[:200]}")
        assert isinstance(record, dict) and {"level", "target"} <= set(record), f"{name}: {line[:200]}"


def test_config_dev_log_level_turns_on_borrow_svc_debug_lines(system):
    """config-dev's BORROW_LOG_LEVEL (through envFrom) is borrow-svc's own level: at DEBUG its
    debug lines appear (the relay's first prune is one, at start), while a server without such
    a level, at RUST_LOG's default, logs none."""
    borrow = system["borrow-svc"]
    assert borrow.env.get("BORROW_LOG_LEVEL", "").upper() == "DEBUG", "config-dev sets BORROW_LOG_LEVEL=DEBUG"

    def debug_lines(name: str) -> list[str]:
        lines = system[name].stdout_path.read_text().splitlines()
        return [line for line in lines if line.strip() and json.loads(line).get("level") == "DEBUG"]

    deadline = time.monotonic() + 10
    while not debug_lines("borrow-svc") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert debug_lines("borrow-svc"), f"borrow-svc at BORROW_LOG_LEVEL=DEBUG logged no debug line:\n{borrow.tail()}"
    assert "BOOK_LOG_LEVEL" not in system["book-svc"].env
    assert not debug_lines("book-svc"), f"book-svc logs debug lines without a level: {debug_lines('book-svc')[:2]}"


def test_borrow_svc_appends_to_its_own_file_on_the_audit_volume(system, manifests):
    pod = system["borrow-svc"]
    [claim_mount] = [
        m for m in pod.container["volumeMounts"]
        if any(v["name"] == m["name"] and "persistentVolumeClaim" in v for v in pod_spec(pod.deployment)["volumes"])
    ]
    directory = pod.mounts[claim_mount["mountPath"]]
    deadline = time.monotonic() + 10
    expected = directory / f"{pod.env['HOSTNAME']}.jsonl"
    while not expected.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert expected.exists(), f"no {expected.name} in the audit volume: {sorted(os.listdir(directory))}"


@pytest.mark.parametrize("name", SERVERS)
def test_server_serves_metrics_where_prometheus_scrapes(system, name):
    """GET on the pod's prometheus.io/port and path: Prometheus' text format, with the call just
    made counted (a gRPC service counts and times the calls it answers, by method and code, and
    not the health checks the probes made)."""
    pod = system[name]
    await_probe(pod, "readinessProbe", budget=30)
    serving = pod.serving_port
    send, close = grpc_caller(serving, LOAD_CALLS[name]) if name in LOAD_CALLS else graphql_caller(serving)
    try:
        answered, detail = send()
    finally:
        close()
    assert answered, f"{name}: the call was not answered: {detail}"
    annotations = pod.deployment["spec"]["template"]["metadata"]["annotations"]
    port = pod.port(int(annotations["prometheus.io/port"]))
    url = f"http://127.0.0.1:{port}{annotations['prometheus.io/path']}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        assert response.status == 200
        assert response.headers.get_content_type() == "text/plain"
        body = response.read().decode()
    if name in LOAD_CALLS:
        method = LOAD_CALLS[name]
        for series in ("grpc_server_requests_total", "grpc_server_request_duration_seconds_bucket"):
            assert f'{series}{{method="{method}"' in body, f"{name}: no {series} of {method} in:\n{body[:2000]}"
        assert 'method="/grpc.health.' not in body, f"{name} counts its health checks"
    else:
        assert "graphql_requests_total{" in body, f"{name}: no graphql_requests_total in:\n{body[:2000]}"


@pytest.mark.parametrize("name", SERVERS)
def test_server_listens_where_its_listen_variable_says(system, manifests, binaries, databases, pod_dir, name):
    """A second instance with only the listen address changed: proves the variable is read."""
    variable = LISTEN_VARIABLES[name]
    port = _free_port()
    pod = make_pod(manifests, binaries, databases, name, pod_dir, override={variable: f"127.0.0.1:{port}"})
    start(pod)
    try:
        deadline = time.monotonic() + 60
        while port not in (ports := _ports_or_empty(pod)):
            if pod.process.poll() is not None:
                pytest.fail(f"{name} with {variable}=127.0.0.1:{port} exited:\n{pod.tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{name} with {variable}=127.0.0.1:{port} listens on {sorted(ports)}:\n{pod.tail()}")
            time.sleep(0.25)
        default = pod.serving_port  # where it would be without the override
        assert default not in ports, f"{name} also listens on {default}, the manifest's address"
    finally:
        stop(pod, signal.SIGTERM)


def _ports_or_empty(pod: Pod) -> set[int]:
    try:
        return listening_ports(pod.process.pid)
    except OSError:
        return set()


# --- SIGTERM under load ------------------------------------------------------------------------


@dataclass
class Call:
    started: float  # time.monotonic()
    answered: bool
    detail: str


def grpc_caller(port: int, method: str):
    """A client with its own connection that sends `method` an empty request: (send, close)."""
    channel = grpc_channel(port)
    method_call = channel.unary_unary(method)  # raw bytes in and out

    def send() -> tuple[bool, str]:
        try:
            method_call(b"", timeout=CALL_TIMEOUT)
            return True, "OK"
        except grpc.RpcError as e:
            return e.code() not in NO_ANSWER, f"{e.code().name}: {e.details()}"

    return send, channel.close


def graphql_caller(port: int):
    """A client with its own keep-alive connection that POSTs GATEWAY_QUERY: (send, close).
    Answered: HTTP 200 with the query's data."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=CALL_TIMEOUT)
    body = json.dumps({"query": GATEWAY_QUERY})

    def send() -> tuple[bool, str]:
        try:
            connection.request("POST", "/graphql", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            reply = response.read()
        except (OSError, http.client.HTTPException) as e:
            connection.close()  # the next request opens a new connection
            return False, f"{type(e).__name__}: {e}"
        try:
            answered = isinstance(json.loads(reply)["data"]["books"]["totalCount"], int)
        except (ValueError, KeyError, TypeError):
            answered = False
        return response.status == 200 and answered, f"HTTP {response.status} {reply[:200]!r}"

    return send, connection.close


def send_continuously(caller, calls: list[Call], enough: threading.Event):
    send, close = caller
    try:
        while not enough.is_set():
            started = time.monotonic()
            answered, detail = send()
            calls.append(Call(started, answered, detail))
            # Back to back; a moment's pause after a failure, which comes at once.
            time.sleep(0.005 if answered else 0.05)
    finally:
        close()


@pytest.mark.parametrize("name", list(reversed(SERVERS)))
def test_sigterm_drains_and_exits_zero_within_the_grace_period(system, name):
    """SIGTERM while clients send requests, as in a rollout: readiness fails at once (an answer,
    not a refused connection), the server goes on answering for LIBRARY_SHUTDOWN_DELAY, no
    request that started before readiness failed is lost, and it exits 0 in time."""
    pod = system[name]
    assert pod.process.poll() is None, f"{name} already exited ({pod.process.returncode}):\n{pod.tail()}"
    grace = pod_spec(pod.deployment).get("terminationGracePeriodSeconds", 30)
    # The kubelet runs the preStop sleep first; SIGTERM gets what is left of the grace period.
    budget = grace - prestop_sleep_seconds(pod.container)
    delay = float(pod.env.get("LIBRARY_SHUTDOWN_DELAY", "0"))
    assert delay >= 1, f"{name}: the manifest sets LIBRARY_SHUTDOWN_DELAY={delay:g}; this test needs 1s or more"
    serving_for = delay / 2  # after SIGTERM, at least
    readiness = probes(pod.container)["readinessProbe"]
    port = pod.serving_port
    await_probe(pod, "readinessProbe", budget=30)

    def caller():
        return grpc_caller(port, LOAD_CALLS[name]) if name in LOAD_CALLS else graphql_caller(port)

    calls: list[Call] = []
    enough = threading.Event()
    senders = [
        threading.Thread(target=send_continuously, args=(caller(), calls, enough), daemon=True)
        for _ in range(LOAD_THREADS)
    ]
    for sender in senders:
        sender.start()
    probe_log: list[tuple[float, bool, bool, str]] = []  # (seconds after SIGTERM, answered, ok, detail)
    not_ready_at = named_status = None
    try:
        deadline = time.monotonic() + 30
        while sum(c.answered for c in calls) < 5 * LOAD_THREADS:
            if time.monotonic() > deadline:
                pytest.fail(f"{name}: the load is not answered: {_failures(calls)}\n{pod.tail()}")
            time.sleep(0.05)
        signalled = time.monotonic()
        pod.process.send_signal(signal.SIGTERM)
        # The readiness probe, as the kubelet runs it, but every PROBE_INTERVAL.
        while pod.process.poll() is None and time.monotonic() < signalled + budget:
            asked = time.monotonic()
            answered, ok, detail = probe_once(pod, readiness)
            probe_log.append((asked - signalled, answered, ok, detail))
            if answered and not ok and not_ready_at is None:
                not_ready_at = time.monotonic()
                if "grpc" in readiness:  # every service name, not only the probe's ""
                    service = LOAD_CALLS[name].split("/")[1]
                    named_status = (service, _health_or_error(pod.port(readiness["grpc"]["port"]), service))
            time.sleep(max(0.0, asked + PROBE_INTERVAL - time.monotonic()))
        try:
            code = pod.process.wait(timeout=max(0.0, signalled + budget - time.monotonic()))
        except subprocess.TimeoutExpired:
            stop(pod)
            pytest.fail(f"{name} still running {budget}s after SIGTERM (the kubelet would SIGKILL):\n{pod.tail()}")
        exited = time.monotonic() - signalled
    finally:
        enough.set()
        for sender in senders:
            sender.join(timeout=CALL_TIMEOUT + 5)

    probes_seen = "\n".join(f"  +{at:.2f}s {detail}" for at, _, _, detail in probe_log) or "  (none)"
    assert code == 0, f"{name} exited {code} after SIGTERM:\n{pod.tail()}"
    before = [c for c in calls if c.started < signalled]
    assert all(c.answered for c in before), f"{name}: failed before SIGTERM: {_failures(before)}"
    assert not_ready_at is not None, (
        f"{name}: readiness never answered not-ready before the process exited {exited:.1f}s after "
        f"SIGTERM (the kubelet would have kept sending it traffic):\n{probes_seen}"
    )
    first = next(detail for _, answered, ok, detail in probe_log if answered and not ok)
    assert first in ("NOT_SERVING", "HTTP 503"), f"{name}: readiness failed with {first}, not NOT_SERVING / 503"
    assert not_ready_at - signalled < serving_for, (
        f"{name}: readiness failed only {not_ready_at - signalled:.2f}s after SIGTERM:\n{probes_seen}"
    )
    lost = [c for c in calls if c.started < not_ready_at and not c.answered]
    assert not lost, f"{name}: requests started before readiness failed were lost: {_failures(lost)}"
    # The shutdown delay: callers that have not yet seen the endpoints change are still served.
    early = [c for c in calls if c.started < signalled + serving_for and not c.answered]
    assert not early, f"{name}: stopped answering within {serving_for:g}s of SIGTERM: {_failures(early, signalled)}"
    late = [c for c in calls if c.started >= signalled + serving_for and c.answered]
    assert late, f"{name}: no request started {serving_for:g}s after SIGTERM or later was answered"
    if named_status:
        assert named_status[1] == "NOT_SERVING", f"{name}: health of {named_status[0]} is {named_status[1]}"
    print(
        f"{name}: {len(calls)} requests, {sum(c.answered for c in calls)} answered; not ready "
        f"{not_ready_at - signalled:.2f}s after SIGTERM, last answer started "
        f"{max(c.started for c in calls if c.answered) - signalled:.2f}s after, exited 0 after {exited:.2f}s"
    )


def _health_or_error(port: int, service: str) -> str:
    try:
        return health_status(port, service, timeout=1)
    except grpc.RpcError as e:
        return f"{e.code().name}: {e.details()}"


def _failures(calls: list[Call], since: float | None = None, most: int = 5) -> str:
    failed = [c for c in calls if not c.answered]
    shown = [c.detail if since is None else f"+{c.started - since:.2f}s {c.detail}" for c in failed[:most]]
    return f"{len(failed)} of {len(calls)} failed, e.g. {shown}"
