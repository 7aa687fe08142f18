"""The manifests agree with the binaries.

For each of the four Deployments of the dev overlay, the real binary (from LIBRARY_BIN_DIR, e.g.
target/debug) is started as a local process with exactly the environment the manifest gives its
container: literal values, ConfigMap values (envFrom, configMapKeyRef) and the generated Secret
placeholders, decoded. Only these local rewrites are made:

- host names of in-cluster Services (book-svc, postgres, rabbitmq, ..., and any *.svc or
  *.svc.cluster.local name, such as the trace collector's) become 127.0.0.1;
- DATABASE_URL becomes a fresh local database, postgres://postgres@127.0.0.1:5432/<unique>,
  dropped afterwards; AMQP_URL becomes a RabbitMQ vhost of this run;
- every volumeMount's path (and so LIBRARY_AUDIT_DIR) becomes a temporary directory.

As the kubelet would, the process runs as the pod's runAsUser/runAsGroup (when this runs as
root), with HOSTNAME set to a pod name, in a working directory it cannot write (the read-only
root filesystem). Then its startup, readiness and liveness probes are run as the kubelet runs
them (grpc.health.v1.Health/Check, or HTTP GET), the Services' targetPorts are checked against
the ports the process really listens on, and on SIGTERM it must exit 0 within the grace period
left after the preStop sleep. A renamed variable or port fails: every variable the manifest sets
must be one the binary's --help lists, and each server must listen where its listen-address
variable says. A missing required variable must stop the binary with a non-zero exit and a log
line naming it.

Needs: LIBRARY_BIN_DIR, PostgreSQL on 127.0.0.1:5432 (trust authentication for `postgres`,
and `psql`), RabbitMQ on 127.0.0.1:5672 (guest/guest). The servers bind their real ports
(50051-50053, 8080), which must be free.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

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

POSTGRES = ("127.0.0.1", 5432)
RABBITMQ = ("127.0.0.1", 5672)
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
# How long a server that lacks a required variable may take to give up.
REFUSAL_SECONDS = 30


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
def amqp_url(backing_services):
    """A RabbitMQ vhost of this run only: the servers declare the contract's durable queues,
    which must neither outlive the run nor meet another system's messages."""
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl not found: the test needs it to create a private vhost")
    vhost = f"k8s-check-{uuid.uuid4().hex[:10]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False, capture_output=True)


@pytest.fixture(scope="session")
def databases(backing_services, amqp_url):
    """Creates fresh databases on demand; drops them all at the end. Also carries the run's
    broker URL (`databases.amqp_url`), the other backing service a pod is given."""
    created = []

    def create(service: str) -> str:
        name = f"k8s_{service.replace('-', '_')}_{uuid.uuid4().hex[:10]}"
        _psql(f'CREATE DATABASE "{name}"')
        created.append(name)
        return f"postgres://postgres@{POSTGRES[0]}:{POSTGRES[1]}/{name}"

    create.amqp_url = amqp_url
    yield create
    for name in created:
        _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', check=False)


def _psql(sql: str, check: bool = True):
    subprocess.run(
        ["psql", "-h", POSTGRES[0], "-p", str(POSTGRES[1]), "-U", "postgres", "-d", "postgres",
         "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
        check=check, capture_output=True, text=True,
        env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
    )


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
    process: subprocess.Popen | None = None

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
    env = {k: _localize(v, manifests) for k, v in env.items()}
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
    return Pod(name, binaries[name], deployment, container, env, workdir, mounts)


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


def _localize(value: str, manifests) -> str:
    """In-cluster host names -> 127.0.0.1, in URLs and in bare host:port values."""
    if "://" in value:
        url = urlsplit(value)
        if _is_cluster_host(url.hostname, manifests):
            userinfo = url.netloc.rsplit("@", 1)[0] + "@" if "@" in url.netloc else ""
            port = f":{url.port}" if url.port else ""
            return urlunsplit(url._replace(netloc=f"{userinfo}127.0.0.1{port}"))
        return value
    host, sep, port = value.rpartition(":")
    if sep and port.isdigit() and _is_cluster_host(host, manifests):
        return f"127.0.0.1:{port}"
    return value


# --- probes, as the kubelet runs them ---------------------------------------------------------


def run_probe(container: dict, probe: dict) -> tuple[bool, str]:
    timeout = probe.get("timeoutSeconds", 1)
    try:
        if "grpc" in probe:
            port = probe["grpc"]["port"]
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.enable_http_proxy", 0)]) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", "")), timeout=timeout
                )
            serving = reply.status == health_pb2.HealthCheckResponse.SERVING
            return serving, health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        if "httpGet" in probe:
            get = probe["httpGet"]
            port = container_port(container, get["port"])
            request = urllib.request.Request(f"http://127.0.0.1:{port}{get.get('path', '/')}")
            for header in get.get("httpHeaders") or []:
                request.add_header(header["name"], header["value"])
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            try:
                with opener.open(request, timeout=timeout) as response:
                    return 200 <= response.status < 400, f"HTTP {response.status}"
            except urllib.error.HTTPError as e:
                return 200 <= e.code < 400, f"HTTP {e.code}"
        if "tcpSocket" in probe:
            port = container_port(container, probe["tcpSocket"]["port"])
            return _can_connect(("127.0.0.1", port), timeout), "tcp"
        return False, f"unsupported probe {sorted(probe)}"
    except (grpc.RpcError, OSError) as e:
        return False, f"{type(e).__name__}: {getattr(e, 'details', lambda: e)()}"


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
        ok, last = run_probe(pod.container, probe)
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
            for port in (p["containerPort"] for p in pod.container["ports"]):
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
    pod = make_pod(manifests, binaries, databases, server, pod_dir, drop=[variable])
    assert variable not in pod.env
    # Any port will do: it must not get as far as serving.
    listen = LISTEN_VARIABLES[server]
    pod.env[listen] = f"127.0.0.1:{_free_port()}"
    start(pod)
    try:
        code = pod.process.wait(timeout=REFUSAL_SECONDS)
    except subprocess.TimeoutExpired:
        stop(pod)
        pytest.fail(f"{server} without {variable} still runs after {REFUSAL_SECONDS}s:\n{pod.tail()}")
    output = pod.output()
    assert code != 0, f"{server} without {variable} exited 0:\n{pod.tail()}"
    naming = [line for line in output.splitlines() if variable in line]
    assert naming, f"{server} without {variable}: no log line names {variable}:\n{pod.tail()}"
    assert "panicked" not in output, f"{server} panicked instead of reporting:\n{pod.tail()}"


@pytest.mark.parametrize("name", SERVERS)
def test_server_starts_and_passes_its_probes(system, name):
    pod = system[name]
    await_probe(pod, "readinessProbe", budget=30)
    await_probe(pod, "livenessProbe")


@pytest.mark.parametrize("name", SERVERS)
def test_service_target_ports_are_the_ports_the_server_listens_on(system, manifests, name):
    pod = system[name]
    listening = listening_ports(pod.process.pid)
    declared = {p["containerPort"] for p in pod.container["ports"]}
    assert declared <= listening, f"{name} declares {sorted(declared)} but listens on {sorted(listening)}"
    assert listening <= declared, f"{name} listens on undeclared ports {sorted(listening - declared)}"
    services = manifests.services_selecting(pod.deployment)
    assert services, f"no Service selects {name}"
    for svc in services:
        for port in svc["spec"]["ports"]:
            target = container_port(pod.container, port.get("targetPort", port["port"]))
            assert target in listening, f"Service {svc['metadata']['name']} targets {target}: nothing listens"
    for kind, probe in probes(pod.container).items():
        port = (probe.get("grpc") or {}).get("port") or container_port(
            pod.container, (probe.get("httpGet") or probe.get("tcpSocket"))["port"]
        )
        assert port in listening, f"{name} {kind} probes port {port}: nothing listens"


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


def test_gateway_serves_metrics_where_prometheus_scrapes(system):
    pod = system["graphql-gateway"]
    annotations = pod.deployment["spec"]["template"]["metadata"]["annotations"]
    url = f"http://127.0.0.1:{annotations['prometheus.io/port']}{annotations['prometheus.io/path']}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        assert response.status == 200
        assert response.headers.get_content_type() == "text/plain"


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
        manifest_ports = {p["containerPort"] for p in pod.container["ports"]}
        assert not (ports & manifest_ports), f"{name} also listens on {sorted(ports & manifest_ports)}"
    finally:
        stop(pod, signal.SIGTERM)


def _ports_or_empty(pod: Pod) -> set[int]:
    try:
        return listening_ports(pod.process.pid)
    except OSError:
        return set()


@pytest.mark.parametrize("name", list(reversed(SERVERS)))
def test_sigterm_drains_and_exits_zero_within_the_grace_period(system, name):
    pod = system[name]
    assert pod.process.poll() is None, f"{name} already exited ({pod.process.returncode}):\n{pod.tail()}"
    grace = pod_spec(pod.deployment).get("terminationGracePeriodSeconds", 30)
    # The kubelet runs the preStop sleep first; SIGTERM gets what is left of the grace period.
    budget = grace - prestop_sleep_seconds(pod.container)
    started = time.monotonic()
    pod.process.send_signal(signal.SIGTERM)
    try:
        code = pod.process.wait(timeout=budget)
    except subprocess.TimeoutExpired:
        stop(pod)
        pytest.fail(f"{name} still running {budget}s after SIGTERM (the kubelet would SIGKILL):\n{pod.tail()}")
    assert code == 0, f"{name} exited {code} after SIGTERM:\n{pod.tail()}"
    print(f"{name}: exited 0, {time.monotonic() - started:.1f}s after SIGTERM")

