"""Policy on the rendered overlays: what the seed, the contract and good operations require of
the manifests, checked on exactly what `kubectl apply -k` would send."""

import re
from urllib.parse import urlsplit

import pytest
import yaml

from k8s_model import (
    DEV,
    GRPC_PORTS,
    IMAGE_REPOSITORY,
    METRICS_PORT,
    PROD,
    ROOT,
    SERVERS,
    all_containers,
    container_port,
    image_parts,
    pod_spec,
    prestop_sleep_seconds,
    probes,
    render,
    selector_matches,
)

OVERLAYS = {"dev": DEV, "prod": PROD}


@pytest.fixture(params=sorted(OVERLAYS), scope="module")
def overlay(request):
    return request.param


@pytest.fixture(scope="module")
def manifests(overlay):
    return render(OVERLAYS[overlay])


@pytest.fixture(scope="module")
def dev():
    return render(DEV)


@pytest.fixture(scope="module")
def prod():
    return render(PROD)


def each_container(manifests):
    for workload in manifests.workloads:
        for container in all_containers(pod_spec(workload)):
            yield workload, container


# --- every container ------------------------------------------------------------------------


def test_every_container_has_cpu_and_memory_requests_and_limits(manifests):
    for workload, c in each_container(manifests):
        resources = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                assert resource in (resources.get(kind) or {}), (
                    f"{workload['metadata']['name']}/{c['name']}: no {resource} {kind}"
                )


def test_every_container_has_readiness_liveness_and_startup_probes(manifests):
    for workload, c in each_container(manifests):
        missing = {"startupProbe", "readinessProbe", "livenessProbe"} - set(probes(c))
        assert not missing, f"{workload['metadata']['name']}/{c['name']}: no {sorted(missing)}"


def test_every_container_runs_as_non_root_without_privileges(manifests):
    for workload, c in each_container(manifests):
        where = f"{workload['metadata']['name']}/{c['name']}"
        pod_sc = pod_spec(workload).get("securityContext") or {}
        sc = c.get("securityContext") or {}
        assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, f"{where}: runAsNonRoot"
        assert sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0, f"{where}: runs as UID 0"
        assert sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation"
        assert not sc.get("privileged"), f"{where}: privileged"
        assert (sc.get("capabilities") or {}).get("drop") == ["ALL"], f"{where}: capabilities"
        seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}
        assert seccomp.get("type") == "RuntimeDefault", f"{where}: seccomp profile"
        assert pod_spec(workload).get("automountServiceAccountToken") is False, (
            f"{where}: mounts a service account token it does not need"
        )


def test_servers_have_a_read_only_root_filesystem_and_the_image_uid(manifests):
    for name in SERVERS:
        spec = pod_spec(manifests.deployment(name))
        c = manifests.server_container(name)
        assert c["securityContext"]["readOnlyRootFilesystem"] is True, name
        # The Dockerfile's `USER 10001:10001`.
        assert spec["securityContext"]["runAsUser"] == 10001, name
        assert spec["securityContext"]["runAsGroup"] == 10001, name


def test_images_are_pinned_and_never_latest(manifests):
    for workload, c in each_container(manifests):
        repository, tag, digest = image_parts(c["image"])
        assert tag or digest, f"{c['image']}: no tag"
        assert tag != "latest", f"{c['image']}: the tag latest"


def test_server_images_come_from_the_registry_and_are_named_after_the_binary(manifests):
    for name in SERVERS:
        repository, tag, _ = image_parts(manifests.server_container(name)["image"])
        assert repository == f"{IMAGE_REPOSITORY}/{name}"
        assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"{name}: tag {tag} is not a pinned version"


def test_overlays_pin_the_server_image_tags_with_kustomize_images():
    for overlay, directory in OVERLAYS.items():
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        pinned = {i["name"]: i.get("newTag") for i in kustomization.get("images") or []}
        for name in SERVERS:
            assert pinned.get(f"{IMAGE_REPOSITORY}/{name}"), f"{overlay}: no images: entry for {name}"


def test_every_server_logs_json(manifests):
    for name in SERVERS:
        env = {e["name"]: e.get("value") for e in manifests.server_container(name).get("env", [])}
        assert env.get("LOG_FORMAT") == "json", name


# --- graceful drain ---------------------------------------------------------------------------


def drain_timeout_seconds() -> int:
    """How long a stopping server waits for its in-flight work: platform's DRAIN_TIMEOUT."""
    source = (ROOT / "platform" / "src" / "service.rs").read_text()
    found = re.search(r"DRAIN_TIMEOUT: Duration = Duration::from_secs\((\d+)\)", source)
    assert found, "platform/src/service.rs: no `DRAIN_TIMEOUT: Duration = Duration::from_secs(N)`"
    return int(found.group(1))


def test_servers_drain_gracefully(manifests):
    drain = drain_timeout_seconds()
    for name in SERVERS:
        spec = pod_spec(manifests.deployment(name))
        c = manifests.server_container(name)
        grace = spec.get("terminationGracePeriodSeconds", 30)
        sleep = prestop_sleep_seconds(c)
        # Native sleep action: the distroless image has no shell for `exec: sleep`.
        assert sleep >= 3, f"{name}: no preStop sleep to let the endpoints update"
        # After SIGTERM the server reports itself not ready but serves on for the delay, for
        # callers that have not yet seen the endpoints change; then it drains.
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        assert "LIBRARY_SHUTDOWN_DELAY" in env, f"{name}: no LIBRARY_SHUTDOWN_DELAY"
        delay = float(env["LIBRARY_SHUTDOWN_DELAY"])
        assert delay >= 1, f"{name}: LIBRARY_SHUTDOWN_DELAY={delay:g}s, too short for callers to notice"
        assert grace >= sleep + delay + drain, (
            f"{name}: {grace}s grace < {sleep}s preStop + {delay:g}s shutdown delay + {drain}s drain"
        )


# --- probes and ports -------------------------------------------------------------------------


def test_grpc_services_use_native_grpc_probes_on_their_port(manifests):
    for name, port in GRPC_PORTS.items():
        c = manifests.server_container(name)
        # gRPC first (the port the Service and the probes use), then Prometheus' /metrics.
        ports = [(p["name"], p["containerPort"]) for p in c["ports"]]
        assert ports == [("grpc", port), ("metrics", METRICS_PORT)], name
        for kind, probe in probes(c).items():
            assert probe.get("grpc", {}).get("port") == port, f"{name} {kind}"
            assert probe["grpc"].get("service", "") == "", f"{name} {kind}: overall health is ''"


def test_gateway_probes_readyz_and_healthz_on_8080(manifests):
    c = manifests.server_container("graphql-gateway")
    assert [p["containerPort"] for p in c["ports"]] == [8080]
    p = probes(c)
    assert p["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert p["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for kind, probe in p.items():
        assert container_port(c, probe["httpGet"]["port"]) == 8080, kind


def test_listen_addresses_match_the_container_ports(manifests):
    variables = {
        "book-svc": "BOOK_GRPC_ADDR",
        "borrow-svc": "BORROW_GRPC_ADDR",
        "dashboard-svc": "DASHBOARD_GRPC_ADDR",
        "graphql-gateway": "GATEWAY_HTTP_ADDR",
    }
    for name, variable in variables.items():
        c = manifests.server_container(name)
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        port = c["ports"][0]["containerPort"]
        assert env.get(variable) == f"0.0.0.0:{port}", f"{name}: {variable}"
    # The services' /metrics: METRICS_ADDR on the port named `metrics`; the gateway has none.
    for name in SERVERS:
        c = manifests.server_container(name)
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        metrics = [p["containerPort"] for p in c["ports"] if p["name"] == "metrics"]
        if name in GRPC_PORTS:
            assert metrics, f"{name}: no port named metrics"
            assert env.get("METRICS_ADDR") == f"0.0.0.0:{metrics[0]}", f"{name}: METRICS_ADDR"
        else:
            assert "METRICS_ADDR" not in env and not metrics, f"{name} serves /metrics on its HTTP port"


def test_services_have_the_contract_types_and_ports(manifests):
    for name, port in GRPC_PORTS.items():
        svc = manifests.get("Service", name)
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP", name
        assert [p["port"] for p in svc["spec"]["ports"]] == [port], name
    gateway = manifests.get("Service", "graphql-gateway")
    assert gateway["spec"]["type"] == "LoadBalancer"
    [port] = gateway["spec"]["ports"]
    assert port["port"] == 80
    target = container_port(manifests.server_container("graphql-gateway"), port["targetPort"])
    assert target == 8080


def test_every_service_targets_a_container_port_of_the_workload_it_selects(manifests):
    for svc in manifests.of_kind("Service"):
        name = svc["metadata"]["name"]
        selected = manifests.workloads_selected_by(svc)
        assert len(selected) == 1, f"Service {name} selects {len(selected)} workloads"
        containers = pod_spec(selected[0])["containers"]
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert any(
                _declares(c, target) for c in containers
            ), f"Service {name}: targetPort {target} is no containerPort of {selected[0]['metadata']['name']}"


def _declares(container, port):
    try:
        container_port(container, port)
        return True
    except KeyError:
        return False


def test_service_urls_point_at_existing_services_and_ports(manifests):
    for name in SERVERS:
        for var in manifests.server_container(name).get("env", []):
            if not var["name"].endswith("_SVC_URL"):
                continue
            url = urlsplit(var["value"])
            assert url.scheme == "http", f"{name} {var['name']}: {var['value']}"
            svc = manifests.get("Service", url.hostname)
            assert url.port in [p["port"] for p in svc["spec"]["ports"]], f"{name} {var['name']}"


def test_callers_know_where_their_downstreams_are(manifests):
    def env_names(name):
        return {e["name"] for e in manifests.server_container(name).get("env", [])}

    assert "BOOK_SVC_URL" in env_names("borrow-svc")
    assert {"BOOK_SVC_URL", "BORROW_SVC_URL", "DASHBOARD_SVC_URL"} <= env_names("graphql-gateway")
    for name in GRPC_PORTS:
        assert {"DATABASE_URL", "AMQP_URL"} <= env_names(name), name
    assert "LIBRARY_JWT_SECRET" in env_names("graphql-gateway")


# --- secrets --------------------------------------------------------------------------------


def _secret_refs(manifests):
    for workload, c in each_container(manifests):
        for var in c.get("env") or []:
            ref = (var.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                yield workload["metadata"]["name"], var["name"], ref


def test_secrets_come_from_secret_refs_never_literals(manifests):
    sensitive = {"DATABASE_URL", "AMQP_URL", "LIBRARY_JWT_SECRET"}
    for workload, c in each_container(manifests):
        for var in c.get("env") or []:
            if var["name"] in sensitive:
                assert "secretKeyRef" in (var.get("valueFrom") or {}), (
                    f"{workload['metadata']['name']}: {var['name']} is not read from a Secret"
                )


def test_dev_generates_every_referenced_secret_with_fake_values(dev):
    for workload, variable, ref in _secret_refs(dev):
        data = dev.secret_data(ref["name"])
        assert ref["key"] in data, f"{workload}: {variable} -> {ref['name']}/{ref['key']} missing"
    for name in GRPC_PORTS:
        for key in ("DATABASE_URL", "AMQP_URL"):
            value = dev.container_env(dev.server_container(name))[key]
            assert "dev-only" in value, f"{name} {key}: not an obviously fake placeholder"
    jwt = dev.container_env(dev.server_container("graphql-gateway"))["LIBRARY_JWT_SECRET"]
    assert "dev-only" in jwt


def test_each_service_has_its_own_database(dev):
    databases = {}
    for name in GRPC_PORTS:
        url = urlsplit(dev.container_env(dev.server_container(name))["DATABASE_URL"])
        assert url.scheme in ("postgres", "postgresql"), name
        assert url.hostname == "postgres", name
        databases[name] = url.path.lstrip("/")
    assert databases == {"book-svc": "book", "borrow-svc": "borrow", "dashboard-svc": "dashboard"}
    init = dev.config_map_data(_volume_config_map(dev, "postgres", "/docker-entrypoint-initdb.d"))
    script = "\n".join(init.values())
    for database in databases.values():
        assert re.search(rf"CREATE DATABASE {database}\b", script), f"init script lacks {database}"


def _volume_config_map(manifests, workload, mount_path):
    w = manifests.get("StatefulSet", workload)
    c = pod_spec(w)["containers"][0]
    [mount] = [m for m in c["volumeMounts"] if m["mountPath"] == mount_path]
    [volume] = [v for v in pod_spec(w)["volumes"] if v["name"] == mount["name"]]
    return volume["configMap"]["name"]


def test_dev_broker_and_database_are_the_ones_the_urls_name(dev):
    for name in GRPC_PORTS:
        env = dev.container_env(dev.server_container(name))
        for key in ("DATABASE_URL", "AMQP_URL"):
            url = urlsplit(env[key])
            svc = dev.get("Service", url.hostname)
            assert url.port in [p["port"] for p in svc["spec"]["ports"]], f"{name} {key}"
    creds = dev.secret_data(_env_from_secret(dev, "rabbitmq"))
    amqp = urlsplit(dev.container_env(dev.server_container("book-svc"))["AMQP_URL"])
    assert (amqp.username, amqp.password) == (creds["RABBITMQ_DEFAULT_USER"], creds["RABBITMQ_DEFAULT_PASS"])
    pg = dev.secret_data(_env_from_secret(dev, "postgres"))
    db = urlsplit(dev.container_env(dev.server_container("book-svc"))["DATABASE_URL"])
    assert (db.username, db.password) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])


def _env_from_secret(manifests, statefulset):
    c = pod_spec(manifests.get("StatefulSet", statefulset))["containers"][0]
    [name] = [s["secretRef"]["name"] for s in c.get("envFrom", []) if "secretRef" in s]
    return name


def test_prod_ships_no_secret_and_documents_every_one_it_needs(prod):
    assert not prod.of_kind("Secret"), "prod must not carry Secrets: they are created out of band"
    deploy_doc = (ROOT / "docs" / "deploy.md").read_text()
    for workload, variable, ref in _secret_refs(prod):
        assert ref["name"] in deploy_doc, f"docs/deploy.md does not explain Secret {ref['name']}"
        assert ref["key"] in deploy_doc, f"docs/deploy.md does not name key {ref['key']}"


# --- the seed's operations --------------------------------------------------------------------


def test_hpa_scales_borrow_svc_on_cpu(manifests, overlay):
    [hpa] = manifests.of_kind("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", "borrow-svc")
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 50}
    if overlay == "dev":
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
    else:
        assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    borrow = manifests.deployment("borrow-svc")
    assert "replicas" not in borrow["spec"], "the HPA owns borrow-svc's replica count"
    assert manifests.server_container("borrow-svc")["resources"]["requests"]["cpu"]


def test_config_dev_reaches_borrow_svc_through_env_from(dev):
    assert dev.config_map_data("config-dev") == {"BORROW_LOG_LEVEL": "DEBUG"}
    c = dev.server_container("borrow-svc")
    assert {"configMapRef": {"name": "config-dev"}} in c.get("envFrom", [])
    assert dev.container_env(c)["BORROW_LOG_LEVEL"] == "DEBUG"


def test_prod_sets_borrow_svc_log_level_through_a_config_map(prod):
    c = prod.server_container("borrow-svc")
    [ref] = [s["configMapRef"]["name"] for s in c.get("envFrom", []) if "configMapRef" in s]
    assert prod.config_map_data(ref)["BORROW_LOG_LEVEL"]


def test_audit_volume_is_a_shared_azurefile_claim_mounted_on_borrow_svc(manifests):
    [pvc] = manifests.of_kind("PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["storageClassName"] == "azurefile"
    spec = pod_spec(manifests.deployment("borrow-svc"))
    [volume] = [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
    assert volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    c = manifests.server_container("borrow-svc")
    [mount] = [m for m in c["volumeMounts"] if m["name"] == volume["name"]]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["LIBRARY_AUDIT_DIR"] == mount["mountPath"]
    assert not mount.get("readOnly")
    assert pod_spec(manifests.deployment("borrow-svc"))["securityContext"]["fsGroup"] == 10001


def _scrape_annotations(workload) -> dict[str, str]:
    annotations = workload["spec"]["template"]["metadata"].get("annotations") or {}
    return {k: v for k, v in annotations.items() if k.startswith("prometheus.io/")}


def test_every_server_is_scraped_by_prometheus(manifests):
    for name in SERVERS:
        annotations = _scrape_annotations(manifests.deployment(name))
        assert annotations.get("prometheus.io/scrape") == "true", f"{name}: not scraped"
        assert annotations.get("prometheus.io/path") == "/metrics", name


def test_a_metrics_port_and_the_scrape_annotations_go_together(manifests):
    """A Deployment whose container declares a port named `metrics` is scraped on it, and a
    scraped workload's annotations name a port its containers declare: the `metrics` one when
    there is one; without one, only the gateway, whose /metrics is on its one HTTP port."""
    for workload in manifests.workloads:
        name = workload["metadata"]["name"]
        containers = all_containers(pod_spec(workload))
        declared = [p["containerPort"] for c in containers for p in c.get("ports") or []]
        metrics = [p["containerPort"] for c in containers for p in c.get("ports") or [] if p.get("name") == "metrics"]
        annotations = _scrape_annotations(workload)
        scraped = annotations.get("prometheus.io/scrape") == "true"
        assert len(metrics) <= 1, f"{name}: {len(metrics)} ports named metrics"
        if metrics and workload["kind"] == "Deployment":
            assert scraped, f"{name} declares a metrics port but has no prometheus.io/scrape: \"true\""
        if scraped:
            assert "prometheus.io/port" in annotations, f"{name}: scraped without prometheus.io/port"
            port = int(annotations["prometheus.io/port"])
            assert port in declared, f"{name}: prometheus.io/port {port} is no containerPort"
            if metrics:
                assert port == metrics[0], f"{name}: scraped on {port}, not on its metrics port {metrics[0]}"
            elif workload["kind"] == "Deployment":
                assert name == "graphql-gateway", f"{name}: scraped, but declares no metrics port"
                assert port == container_port(manifests.server_container(name), "http"), name


def test_namespaces_enforce_the_restricted_pod_security_standard(manifests):
    [ns] = manifests.of_kind("Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for doc in manifests.docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == ns["metadata"]["name"], doc["metadata"]["name"]


def test_tracing_endpoint_is_set_on_every_server(manifests):
    for name in SERVERS:
        env = {e["name"]: e.get("value") for e in manifests.server_container(name).get("env", [])}
        assert urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"]).port == 4317, name


# --- prod: availability -----------------------------------------------------------------------


def test_prod_runs_two_or_more_pods_of_every_server(prod):
    [hpa] = prod.of_kind("HorizontalPodAutoscaler")
    for name in SERVERS:
        replicas = prod.deployment(name)["spec"].get("replicas")
        if replicas is None:
            assert hpa["spec"]["scaleTargetRef"]["name"] == name
            replicas = hpa["spec"]["minReplicas"]
        assert replicas >= 2, name


def test_prod_has_a_pod_disruption_budget_per_server(prod):
    pdbs = prod.of_kind("PodDisruptionBudget")
    for name in SERVERS:
        labels = prod.deployment(name)["spec"]["template"]["metadata"]["labels"]
        matching = [p for p in pdbs if selector_matches(p["spec"]["selector"], labels)]
        assert len(matching) == 1, f"{name}: {len(matching)} PodDisruptionBudgets"
        assert matching[0]["spec"].get("minAvailable") == 1 or matching[0]["spec"].get("maxUnavailable") == 1


def test_prod_spreads_every_server_over_zones_and_nodes(prod):
    for name in SERVERS:
        spec = pod_spec(prod.deployment(name))
        constraints = spec.get("topologySpreadConstraints") or []
        keys = {c["topologyKey"] for c in constraints}
        assert {"topology.kubernetes.io/zone", "kubernetes.io/hostname"} <= keys, name
        labels = prod.deployment(name)["spec"]["template"]["metadata"]["labels"]
        for c in constraints:
            assert selector_matches(c["labelSelector"], labels), name
            assert "app" in c.get("matchLabelKeys", []), f"{name}: would spread among all servers"


# --- prod: network policies, evaluated --------------------------------------------------------

OUTSIDE = "outside"  # a client beyond the LoadBalancer
NAMESPACE = "library"


class Peer:
    def __init__(self, labels, namespace=NAMESPACE, namespace_labels=None, ip="203.0.113.10"):
        self.labels = labels
        self.namespace = namespace
        self.namespace_labels = namespace_labels or {"kubernetes.io/metadata.name": namespace}
        self.ip = ip


def _peer_allowed(rule_peers, peer, policy_ns):
    if rule_peers is None:  # no from/to: every source or destination
        return True
    for p in rule_peers:
        if "ipBlock" in p:
            if peer.labels is None:  # only addresses outside the cluster, as a simplification
                return True
            continue
        ns_sel, pod_sel = p.get("namespaceSelector"), p.get("podSelector")
        if peer.labels is None:
            continue
        if ns_sel is not None:
            ns_ok = selector_matches(ns_sel, peer.namespace_labels) if ns_sel else True
        else:
            ns_ok = peer.namespace == policy_ns
        pod_ok = selector_matches(pod_sel, peer.labels) if pod_sel else True
        if ns_ok and pod_ok:
            return True
    return False


def _port_allowed(rule_ports, port):
    if not rule_ports:
        return True
    return any(p.get("port") == port and p.get("protocol", "TCP") == "TCP" for p in rule_ports)


def _direction_allows(policies, pod_labels, direction, peer, port):
    key = {"Ingress": "ingress", "Egress": "egress"}[direction]
    peers_key = {"Ingress": "from", "Egress": "to"}[direction]
    selecting = [
        p
        for p in policies
        if direction in p["spec"].get("policyTypes", ["Ingress"])
        and (not p["spec"]["podSelector"] or selector_matches(p["spec"]["podSelector"], pod_labels))
    ]
    if not selecting:
        return True
    return any(
        _peer_allowed(rule.get(peers_key), peer, p["metadata"]["namespace"]) and _port_allowed(rule.get("ports"), port)
        for p in selecting
        for rule in p["spec"].get(key) or []
    )


def can_connect(prod, source, destination, port):
    """Whether `source` (a server name or OUTSIDE) may open a TCP connection to `destination`."""
    policies = prod.of_kind("NetworkPolicy")
    dst_labels = prod.deployment(destination)["spec"]["template"]["metadata"]["labels"]
    if source == OUTSIDE:
        src = Peer(None)
    else:
        src = Peer(prod.deployment(source)["spec"]["template"]["metadata"]["labels"])
        if not _direction_allows(policies, src.labels, "Egress", Peer(dst_labels), port):
            return False
    return _direction_allows(policies, dst_labels, "Ingress", src, port)


SERVER_PORTS = {**GRPC_PORTS, "graphql-gateway": 8080}
ALLOWED = {
    ("outside", "graphql-gateway"),
    ("graphql-gateway", "book-svc"),
    ("graphql-gateway", "borrow-svc"),
    ("graphql-gateway", "dashboard-svc"),
    ("borrow-svc", "book-svc"),
}


@pytest.mark.parametrize("source", [OUTSIDE] + SERVERS)
@pytest.mark.parametrize("destination", SERVERS)
def test_prod_network_policies_allow_exactly_the_architecture_flows(prod, source, destination):
    if source == destination:
        return
    allowed = can_connect(prod, source, destination, SERVER_PORTS[destination])
    assert allowed == ((source, destination) in ALLOWED), (
        f"{source} -> {destination}:{SERVER_PORTS[destination]} should be "
        f"{'allowed' if not allowed else 'denied'}"
    )


# The prometheus-community chart's server pod (k8s/observability/prometheus-values.yaml), and
# another pod of the same namespace (Grafana).
PROMETHEUS = Peer(
    {"app.kubernetes.io/name": "prometheus", "app.kubernetes.io/component": "server",
     "app.kubernetes.io/instance": "prometheus"},
    namespace="observability",
)
GRAFANA = Peer(
    {"app.kubernetes.io/name": "grafana", "app.kubernetes.io/instance": "grafana"}, namespace="observability"
)


def test_prod_lets_prometheus_and_only_it_scrape_the_services_metrics(prod):
    policies = prod.of_kind("NetworkPolicy")
    for name in SERVERS:
        deployment = prod.deployment(name)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        port = int(_scrape_annotations(deployment)["prometheus.io/port"])
        scraped = _direction_allows(policies, labels, "Ingress", PROMETHEUS, port)
        assert scraped, f"Prometheus cannot scrape {name}:{port}"
        if port == SERVER_PORTS[name]:
            continue  # the gateway: its /metrics is on the port it serves everyone on
        other = _direction_allows(policies, labels, "Ingress", GRAFANA, port)
        assert not other, f"any pod of observability reaches {name}:{port}"
        assert not can_connect(prod, OUTSIDE, name, port), f"outside -> {name}:{port}"
        for source in SERVERS:
            if source != name:
                assert not can_connect(prod, source, name, port), f"{source} -> {name}:{port}"


def test_prod_denies_by_default_and_allows_dns_and_backing_services(prod):
    policies = prod.of_kind("NetworkPolicy")
    assert any(
        p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress") and not p["spec"].get("egress")
        for p in policies
    ), "no default-deny policy"
    dns = Peer({"k8s-app": "kube-dns"}, namespace="kube-system")
    database = Peer(None)
    for name in SERVERS:
        labels = prod.deployment(name)["spec"]["template"]["metadata"]["labels"]
        assert _direction_allows(policies, labels, "Egress", dns, 53), f"{name}: no DNS"
        collector = Peer({"app": "otel-collector"}, namespace="observability")
        assert _direction_allows(policies, labels, "Egress", collector, 4317), f"{name}: no OTLP"
    for name in GRPC_PORTS:
        labels = prod.deployment(name)["spec"]["template"]["metadata"]["labels"]
        for port in (5432, 5672):
            assert _direction_allows(policies, labels, "Egress", database, port), f"{name}: no {port}"
    gateway = prod.deployment("graphql-gateway")["spec"]["template"]["metadata"]["labels"]
    assert not _direction_allows(policies, gateway, "Egress", database, 5432), "gateway reaches the DB"
