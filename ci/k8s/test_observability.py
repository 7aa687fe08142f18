"""k8s/observability agrees with itself and with the servers: the dashboard asks for the metrics
the gateway exports and the labels Promtail makes, the data sources it names exist, traces go
from the servers to the collector to Tempo on ports that match.

The Helm charts themselves cannot be fetched offline, so their values files are checked for
the keys this setup relies on, not rendered."""

import json
import re
from urllib.parse import urlsplit

import pytest
import yaml

from k8s_model import DEV, OBSERVABILITY, PROD, SERVERS, container_port, pod_spec, render

DASHBOARD = OBSERVABILITY / "dashboards" / "library-circulation.json"

# What the gateway exports (CONTRACT/issue 6), with the labels each metric carries.
GATEWAY_METRICS = {
    "graphql_requests_total": {"operation", "status"},
    "graphql_request_duration_seconds": {"operation", "status"},
    "grpc_client_requests_total": {"service", "method", "code"},
    "library_borrows_total": set(),
    "library_returns_total": set(),
    "library_late_fees_won_total": set(),
}
# Labels Prometheus' kubernetes-pods job adds to every scraped series.
SCRAPE_LABELS = {"namespace", "pod", "app", "instance", "job", "le"}
# Series from kube-state-metrics (installed by prometheus-values.yaml).
OTHER_METRICS = {"kube_deployment_status_replicas_ready": {"deployment", "namespace"}}
# Labels Promtail gives every log stream (promtail-values.yaml) that queries may use.
LOKI_LABELS = {"namespace", "service", "level", "target", "pod", "container", "app"}


def values(name):
    return yaml.safe_load((OBSERVABILITY / name).read_text())


@pytest.fixture(scope="module")
def dashboard():
    return json.loads(DASHBOARD.read_text())


def queries(dashboard, datasource_type):
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            ds = target.get("datasource") or panel.get("datasource") or {}
            if ds.get("type") == datasource_type:
                yield panel["title"], target["expr"]


PROMQL_WORDS = {
    "sum", "by", "rate", "increase", "histogram_quantile", "without", "avg", "max", "min",
    "count", "irate", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
}


def metric_names(expr):
    expr = re.sub(r'"[^"]*"', '""', expr)  # drop string literals
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # drop range selectors
    expr = re.sub(r"\b(by|without)\s*\([^)]*\)", "", expr)  # drop grouping labels
    expr = re.sub(r"\{[^}]*\}", "", expr)  # drop label matchers
    names = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", expr))
    return {n for n in names if n not in PROMQL_WORDS and not n.startswith("__")}


def base_metric(name):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in GATEWAY_METRICS:
            return name[: -len(suffix)]
    return name


def test_dashboard_uses_only_exported_metrics_and_their_labels(dashboard):
    known = {**GATEWAY_METRICS, **OTHER_METRICS}
    for title, expr in queries(dashboard, "prometheus"):
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr}"
        for name in names:
            metric = base_metric(name)
            assert metric in known, f"{title}: unknown metric {name}"
            used = set(re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr))
            used = {label.strip() for group in used for label in group.split(",") if label.strip()}
            used |= set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", expr))
            assert used <= known[metric] | SCRAPE_LABELS, f"{title}: labels {used - known[metric] - SCRAPE_LABELS}"


def test_dashboard_shows_every_gateway_metric(dashboard):
    shown = {base_metric(n) for _, expr in queries(dashboard, "prometheus") for n in metric_names(expr)}
    assert set(GATEWAY_METRICS) <= shown, f"not on the dashboard: {set(GATEWAY_METRICS) - shown}"


def test_dashboard_shows_rate_errors_and_latency(dashboard):
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    for word in ("requests per second", "error", "latency", "by service", "borrows", "returns", "late fees"):
        assert word in titles, f"no panel about {word!r}"
    exprs = " ".join(expr for _, expr in queries(dashboard, "prometheus"))
    assert "histogram_quantile" in exprs and "graphql_request_duration_seconds_bucket" in exprs


def test_dashboard_log_queries_use_promtail_labels(dashboard):
    log_queries = list(queries(dashboard, "loki"))
    assert log_queries, "no Loki panel"
    for title, expr in log_queries:
        selectors = re.findall(r"\{([^}]*)\}", expr)
        assert selectors, f"{title}: no stream selector"
        for selector in selectors:
            labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", selector))
            assert labels <= LOKI_LABELS, f"{title}: labels {labels - LOKI_LABELS}"


def test_dashboard_data_sources_are_provisioned_in_grafana(dashboard):
    provisioned = values("grafana-values.yaml")["datasources"]["datasources.yaml"]["datasources"]
    uids = {(d["type"], d["uid"]) for d in provisioned}
    for panel in dashboard["panels"]:
        if "datasource" in panel:
            ds = panel["datasource"]
            assert (ds["type"], ds["uid"]) in uids, f"{panel['title']}: {ds} is not provisioned"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"


def test_grafana_sidecar_loads_the_dashboard_config_map():
    sidecar = values("grafana-values.yaml")["sidecar"]["dashboards"]
    cm = render(OBSERVABILITY).get("ConfigMap", "library-circulation-dashboard")
    assert sidecar["enabled"] is True
    assert cm["metadata"]["labels"][sidecar["label"]] == sidecar["labelValue"]
    assert sidecar.get("searchNamespace") in (None, cm["metadata"]["namespace"])
    assert json.loads(cm["data"]["library-circulation.json"])["uid"] == "library-circulation"


def test_promtail_parses_the_json_logs_into_level_target_and_service_labels():
    config = values("promtail-values.yaml")["config"]
    relabels = config["snippets"]["extraRelabelConfigs"]
    assert any(
        r["source_labels"] == ["__meta_kubernetes_pod_label_app"] and r["target_label"] == "service"
        for r in relabels
    ), "no `service` label from the pod's app label"
    stages = config["snippets"]["pipelineStages"]
    [match] = [s["match"] for s in stages if "match" in s]
    namespaces = re.search(r'namespace=~"([^"]+)"', match["selector"]).group(1)
    for overlay in (DEV, PROD):
        [ns] = render(overlay).of_kind("Namespace")
        assert re.fullmatch(namespaces, ns["metadata"]["name"]), f"{ns['metadata']['name']} not parsed"
    [json_stage] = [s["json"] for s in match["stages"] if "json" in s]
    # tracing-subscriber's JSON format has `level` and `target` at the top level.
    assert json_stage["expressions"]["level"] == "level"
    assert json_stage["expressions"]["target"] == "target"
    [labels] = [s["labels"] for s in match["stages"] if "labels" in s]
    assert {"level", "target"} <= set(labels)
    [client] = config["clients"]
    assert client["url"] == loki_url() + "/loki/api/v1/push"


def loki_url():
    loki = values("loki-values.yaml")
    assert loki["deploymentMode"] == "SingleBinary"
    assert loki["gateway"]["enabled"] is False  # so clients talk to the `loki` Service on 3100
    return "http://loki.observability.svc.cluster.local:3100"


def test_grafana_reads_loki_prometheus_and_tempo_where_the_charts_serve_them():
    provisioned = values("grafana-values.yaml")["datasources"]["datasources.yaml"]["datasources"]
    urls = {d["type"]: d["url"] for d in provisioned}
    assert urls["loki"] == loki_url()
    assert urls["prometheus"] == "http://prometheus-server.observability.svc.cluster.local"
    assert urlsplit(urls["tempo"]).hostname == "tempo.observability.svc.cluster.local"


def test_traces_flow_from_the_servers_through_the_collector_to_tempo():
    collector_config = yaml.safe_load((OBSERVABILITY / "otel-collector-config.yaml").read_text())
    observability = render(OBSERVABILITY)
    svc = observability.get("Service", "otel-collector")
    deployment = observability.get("Deployment", "otel-collector")
    [container] = pod_spec(deployment)["containers"]

    # servers -> collector: the endpoint the tracing component sets is the Service's OTLP port
    for overlay in (DEV, PROD):
        for name in SERVERS:
            env = {e["name"]: e.get("value") for e in render(overlay).server_container(name)["env"]}
            endpoint = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
            assert endpoint.hostname == f"otel-collector.{svc['metadata']['namespace']}.svc.cluster.local"
            [port] = [p for p in svc["spec"]["ports"] if p["port"] == endpoint.port]
            assert port["name"] == "otlp-grpc"
            grpc_endpoint = collector_config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
            assert int(grpc_endpoint.rsplit(":", 1)[1]) == container_port(container, port["targetPort"])

    # the pipeline only uses declared components
    pipeline = collector_config["service"]["pipelines"]["traces"]
    assert "otlp" in pipeline["receivers"]
    for kind in ("receivers", "processors", "exporters"):
        for component in pipeline[kind]:
            assert component in collector_config[kind], f"{kind}: {component} not configured"

    # collector -> Tempo
    tempo_endpoint = collector_config["exporters"]["otlp/tempo"]["endpoint"]
    tempo = values("tempo-values.yaml")["tempo"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert tempo_endpoint.split(":")[-1] == tempo.split(":")[-1]
    assert tempo_endpoint.startswith("tempo.observability.")

    # the config file is the one the Deployment mounts and the probes hit the health extension
    args = " ".join(container.get("args", []))
    [mount] = container["volumeMounts"]
    assert f"--config={mount['mountPath']}/config.yaml" in args
    health_port = int(collector_config["extensions"]["health_check"]["endpoint"].rsplit(":", 1)[1])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container_port(container, container[probe]["httpGet"]["port"]) == health_port


def test_prometheus_keeps_the_annotation_based_pod_scraping():
    prometheus = values("prometheus-values.yaml")
    # The chart's default scrape_configs include the kubernetes-pods job; overriding
    # serverFiles would drop it.
    assert "serverFiles" not in prometheus
    assert prometheus["kube-state-metrics"]["enabled"] is True
