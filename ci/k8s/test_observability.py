"""k8s/observability agrees with itself and with the servers: the dashboard asks for the metrics
the gateway and the gRPC services export and the labels Promtail makes, the data sources it
names exist, traces go from the servers to the collector to Tempo on ports that match.

The Helm charts themselves cannot be fetched offline, so their values files are checked for
the keys this setup relies on, not rendered."""

import json
import re
from urllib.parse import urlsplit

import pytest
import yaml

from k8s_model import DEV, GRPC_PORTS, OBSERVABILITY, PROD, ROOT, SERVERS, container_port, pod_spec, render

DASHBOARD = OBSERVABILITY / "dashboards" / "library-circulation.json"
# Where each kind of process records its metrics: the gateway in its own code; the gRPC services
# in theirs and in the platform's (the gRPC server layer, the outbox relay, the consumers), which
# the gateway links too but does not run.
GATEWAY_SOURCES = [ROOT / "graphql-gateway" / "src"]
SERVICE_SOURCES = [ROOT / "platform" / "src"] + [ROOT / name / "src" for name in GRPC_PORTS]

# What the gateway exports, exactly as its code records it: name -> (kind, labels).
# graphql-gateway/src/http.rs: one counter and one histogram per GraphQL request;
# downstream.rs: per gRPC call to a downstream service; schema/mod.rs: the business counters.
# test_the_metric_tables_are_what_the_code_records holds these tables to the code.
GATEWAY_METRICS = {
    "graphql_requests_total": ("counter", {"operation", "status"}),
    "graphql_request_duration_seconds": ("histogram", {"operation"}),
    "grpc_client_requests_total": ("counter", {"service", "method", "code"}),
    "grpc_client_request_duration_seconds": ("histogram", {"service", "method"}),
    "library_borrows_total": ("counter", set()),
    "library_returns_total": ("counter", set()),
    "library_late_fees_won_total": ("counter", set()),
    # auth.rs: each fetch of the identity provider's JWKS (LIBRARY_JWT_JWKS_URL).
    "gateway_jwks_fetches_total": ("counter", {"reason", "outcome"}),
}
# What each gRPC service exports (on METRICS_ADDR), as the platform records it.
# platform/src/metrics.rs: per call a service answers (health and reflection not counted);
# bus/relay.rs: per event the outbox relay published, and per batch how long until confirmed;
# bus/consumer.rs: per delivery consumed, and its lag since the event was written.
SERVICE_METRICS = {
    "grpc_server_requests_total": ("counter", {"method", "code"}),
    "grpc_server_request_duration_seconds": ("histogram", {"method"}),
    "events_published_total": ("counter", set()),
    "events_consumed_total": ("counter", {"consumer", "outcome"}),
    "events_publish_seconds": ("histogram", set()),
    "events_consumed_lag_seconds": ("histogram", {"consumer"}),
    # borrow-svc/src/circulation.rs: per expired hold settled.
    "stock_holds_settled_total": ("counter", {"outcome"}),
}
# tonic's Code in Debug form, as both the gateway's client metrics and the services' server
# metrics name a call's status.
TONIC_CODES = {
    "Ok", "Cancelled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
    "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
    "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
}
# The values the code gives the labels a query may match on, per metric (a histogram's are its
# series'). test_the_label_values_are_what_the_code_gives checks the ones read off the code.
DOWNSTREAMS = {"book", "borrow", "dashboard"}  # graphql-gateway/src/lib.rs: Downstream::new("book", …)
CONSUMERS = {"book-svc", "borrow-svc", "dashboard-svc"}  # */src/events.rs: .subscriptions("book-svc")
LABEL_VALUES = {
    # http.rs: "ok" without GraphQL errors, else "error".
    "graphql_requests_total": {"status": {"ok", "error"}},
    # downstream.rs: "Shed" when the concurrency budget is spent, else tonic's Code.
    "grpc_client_requests_total": {"service": DOWNSTREAMS, "code": TONIC_CODES | {"Shed"}},
    "grpc_client_request_duration_seconds": {"service": DOWNSTREAMS},
    # metrics.rs: the call's path (/package.Service/Method, from proto/) and its grpc-status.
    "grpc_server_requests_total": {"code": TONIC_CODES, "method": "from proto"},
    "grpc_server_request_duration_seconds": {"method": "from proto"},
    # consumer.rs: the Subscriptions' name; "applied", or "dead_lettered" when it went to the DLQ.
    "events_consumed_total": {"consumer": CONSUMERS, "outcome": {"applied", "dead_lettered"}},
    "events_consumed_lag_seconds": {"consumer": CONSUMERS},
    # circulation.rs: the loan open, closed, or never stored.
    "stock_holds_settled_total": {"outcome": {"confirmed", "released", "never_stored"}},
    # auth.rs: a periodic refresh or a token naming an unknown key id; fetched or not.
    "gateway_jwks_fetches_total": {"reason": {"refresh", "unknown_kid"}, "outcome": {"ok", "error", "rate_limited"}},
}
# Series from kube-state-metrics (installed by prometheus-values.yaml).
OTHER_METRICS = {"kube_deployment_status_replicas_ready": ("gauge", {"deployment", "namespace"})}
# Labels Prometheus' kubernetes-pods job adds to every scraped series: the pod's labels (so `app`,
# the server's name: what the dashboard groups the services' own metrics by), its namespace and
# name. No `service`: on the gateway's client metrics that label is the downstream called.
SCRAPE_LABELS = {"namespace", "pod", "app", "instance", "job"}
# The values of `app` on each exporter's series: its Deployment's pod label.
APPS = {"gateway": {"graphql-gateway"}, "services": set(GRPC_PORTS)}
# The series a Prometheus histogram is exported as (the _bucket ones with the label `le`).
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
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


# --- what the code records --------------------------------------------------------------------


def recorded_metrics(sources) -> dict[str, tuple[str, set[str]]]:
    """Every `metrics::counter!/histogram!/gauge!("name", "label" => value, ...)` call in
    `sources`: name -> (kind, label names)."""
    found: dict[str, tuple[str, set[str]]] = {}
    for directory in sources:
        for path in sorted(directory.rglob("*.rs")):
            source = path.read_text()
            for m in re.finditer(r"\b(counter|histogram|gauge)!\s*\(", source):
                arguments = _balanced(source, m.end() - 1)
                name = re.match(r'\s*"([^"]+)"', arguments)
                assert name, f"{path.relative_to(ROOT)}: a {m.group(1)}! without a literal name: {arguments}"
                labels = set(re.findall(r'"([^"]+)"\s*=>', arguments))
                kind, known = found.setdefault(name.group(1), (m.group(1), labels))
                where = f"{path.relative_to(ROOT)}: {name.group(1)}"
                assert (kind, known) == (m.group(1), labels), f"{where} recorded as {kind} {known} elsewhere"
    return found


def _balanced(source: str, open_at: int) -> str:
    """The text inside the parentheses that open at `open_at`."""
    depth = 0
    for i in range(open_at, len(source)):
        depth += {"(": 1, ")": -1}.get(source[i], 0)
        if depth == 0:
            return source[open_at + 1 : i]
    raise ValueError(f"unbalanced parentheses from offset {open_at}")


@pytest.mark.parametrize(
    "table,sources",
    [("GATEWAY_METRICS", GATEWAY_SOURCES), ("SERVICE_METRICS", SERVICE_SOURCES)],
    ids=["gateway", "services"],
)
def test_the_metric_tables_are_what_the_code_records(table, sources):
    expected = globals()[table]
    recorded = recorded_metrics(sources)
    assert recorded, f"no metric recorded under {[str(d.relative_to(ROOT)) for d in sources]}"
    assert recorded == expected, (
        f"{table} differs from the code:\n"
        f"  only in the code:  {sorted(_frozen(recorded) - _frozen(expected))}\n"
        f"  only in the table: {sorted(_frozen(expected) - _frozen(recorded))}"
    )


def test_the_label_values_are_what_the_code_gives():
    gateway = (ROOT / "graphql-gateway" / "src" / "lib.rs").read_text()
    downstreams = re.findall(r'Downstream::new\(\s*"([^"]+)"', gateway)
    assert set(downstreams) == DOWNSTREAMS, f"downstream services are {downstreams}"
    consumers = set()
    for name in GRPC_PORTS:
        for path in sorted((ROOT / name / "src").rglob("*.rs")):
            consumers |= set(re.findall(r'\.subscriptions\(\s*"([^"]+)"\s*\)', path.read_text()))
    assert consumers == CONSUMERS, f"the services' consumers are named {sorted(consumers)}"
    consumer = (ROOT / "platform" / "src" / "bus" / "consumer.rs").read_text()
    outcomes = set(re.findall(r'"outcome"\s*=>\s*"([^"]+)"', consumer))
    assert outcomes == LABEL_VALUES["events_consumed_total"]["outcome"], f"outcomes are {sorted(outcomes)}"
    assert grpc_methods(), "no gRPC method in proto/"


def grpc_methods() -> set[str]:
    """Every /package.Service/Method of proto/library/*: the `method` of the server metrics."""
    methods = set()
    for path in sorted((ROOT / "proto" / "library").rglob("*.proto")):
        source = re.sub(r"//[^\n]*", "", path.read_text())
        package = re.search(r"^\s*package\s+([\w.]+)\s*;", source, re.MULTILINE)
        for service, body in re.findall(r"\bservice\s+(\w+)\s*\{(.*?)^\}", source, re.MULTILINE | re.DOTALL):
            for method in re.findall(r"\brpc\s+(\w+)\s*\(", body):
                methods.add(f"/{package.group(1)}.{service}/{method}")
    return methods


def label_values(metric: str, label: str) -> set[str] | None:
    """The values the code gives `label` of `metric` (None: not known, any value goes)."""
    if label == "app":
        return APPS["gateway" if metric in GATEWAY_METRICS else "services"]
    values = LABEL_VALUES.get(metric, {}).get(label)
    return grpc_methods() if values == "from proto" else values


def _frozen(table):
    return {(name, kind, tuple(sorted(labels))) for name, (kind, labels) in table.items()}


# --- what the dashboard asks for --------------------------------------------------------------

PROMQL_WORDS = {
    "sum", "by", "rate", "increase", "histogram_quantile", "without", "avg", "max", "min",
    "count", "irate", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
}
_SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{([^}]*)\})?")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")


def selectors(expr):
    """(series name, [(label, operator, value)]) of each series an expression selects."""
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # drop range selectors
    expr = _GROUPING.sub("", expr)  # drop grouping labels
    for m in _SELECTOR.finditer(expr):
        if m.group(1) in PROMQL_WORDS or m.group(1).startswith("__"):
            continue
        if m.group(2) is None and expr[m.end():].lstrip().startswith("("):
            continue  # a function
        yield m.group(1), _MATCHER.findall(m.group(2) or "")


def grouping_labels(expr):
    return {label.strip() for group in _GROUPING.findall(expr) for label in group.split(",") if label.strip()}


def metric_names(expr):
    return {name for name, _ in selectors(expr)}


def series_labels(name):
    """(metric, labels) of an exported series, or None: a counter or gauge is its name, a
    histogram only its _bucket (with `le`), _sum and _count series."""
    known = {**GATEWAY_METRICS, **SERVICE_METRICS, **OTHER_METRICS}
    if name in known and known[name][0] != "histogram":
        return name, known[name][1] | SCRAPE_LABELS
    for suffix in HISTOGRAM_SERIES:
        metric = name.removesuffix(suffix)
        if name.endswith(suffix) and known.get(metric, ("",))[0] == "histogram":
            return metric, known[metric][1] | SCRAPE_LABELS | ({"le"} if suffix == "_bucket" else set())
    return None


def base_metric(name):
    found = series_labels(name)
    return found[0] if found else name


def test_dashboard_uses_only_exported_metrics_and_their_labels(dashboard):
    for title, expr in queries(dashboard, "prometheus"):
        found = list(selectors(expr))
        assert found, f"{title}: no metric in {expr}"
        labels_of_every_series = None
        for name, matchers in found:
            series = series_labels(name)
            assert series, f"{title}: {name} is not a series the servers or kube-state-metrics export"
            metric, labels = series
            for label, operator, value in matchers:
                assert label in labels, f"{title}: {metric} has no label {label!r} (it has {sorted(labels)})"
                possible = label_values(metric, label) if metric not in OTHER_METRICS else None
                if possible is not None and "$" not in value:
                    if operator in ("=", "!="):
                        matching = {value} & possible
                    else:
                        matching = {v for v in possible if re.fullmatch(value, v)}
                    assert matching, f'{title}: {label}{operator}"{value}" matches no value the code gives {label}'
            labels_of_every_series = labels if labels_of_every_series is None else labels_of_every_series & labels
        unknown = grouping_labels(expr) - labels_of_every_series
        assert not unknown, f"{title}: groups by {sorted(unknown)}, which {sorted(metric_names(expr))} lack"


def test_dashboard_shows_every_exported_metric(dashboard):
    shown = {base_metric(n) for _, expr in queries(dashboard, "prometheus") for n in metric_names(expr)}
    exported = set(GATEWAY_METRICS) | set(SERVICE_METRICS)
    assert exported <= shown, f"not on the dashboard: {exported - shown}"


def test_dashboard_shows_rate_errors_and_latency(dashboard):
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    for word in ("requests per second", "error", "latency", "by service", "borrows", "returns", "late fees"):
        assert word in titles, f"no panel about {word!r}"
    exprs = [expr for _, expr in queries(dashboard, "prometheus")]
    # Latency quantiles, of the GraphQL requests and of each downstream service's calls.
    histograms = {"graphql_request_duration_seconds": {"le"}, "grpc_client_request_duration_seconds": {"le", "service"}}
    for histogram, by in histograms.items():
        for quantile, name in (("0.5", "p50"), ("0.99", "p99")):
            assert any(
                re.search(rf"histogram_quantile\(\s*{re.escape(quantile)}\s*,", e)
                and f"{histogram}_bucket" in e
                and by <= grouping_labels(e)
                for e in exprs
            ), f"no {name} of {histogram} by {sorted(by)}"
    # Rate and errors per downstream service.
    per_service = [e for e in exprs if "grpc_client_requests_total" in e and "service" in grouping_labels(e)]
    assert any('code!="Ok"' in e for e in per_service), "no gRPC error rate by service"
    assert any("code" not in e for e in per_service), "no gRPC request rate by service"


def test_dashboard_shows_each_service_from_its_own_metrics(dashboard):
    """The gRPC services' side: calls answered, errors (faults apart from refusals) and latency
    per service (the pod's `app` label), and the events: published, consumed by consumer, and the
    dead-lettered ones, which should stay at 0."""
    exprs = [expr for _, expr in queries(dashboard, "prometheus")]
    per_service = [e for e in exprs if "grpc_server_requests_total" in e and "app" in grouping_labels(e)]
    assert any("code" not in e for e in per_service), "no rate of the calls each service answers"
    assert any('code!="Ok"' in e for e in per_service), "no error rate of the calls each service answers"
    faults = [re.search(r'code=~"([^"]+)"', e) for e in per_service]
    faults = {code for m in faults if m for code in TONIC_CODES if re.fullmatch(m.group(1), code)}
    assert {"Internal", "Unavailable", "Unknown", "DeadlineExceeded"} <= faults, f"server faults are {faults}"
    assert not faults & {"Ok", "NotFound", "FailedPrecondition", "InvalidArgument"}, "refusals counted as faults"
    for quantile, name in (("0.5", "p50"), ("0.99", "p99")):
        assert any(
            re.search(rf"histogram_quantile\(\s*{re.escape(quantile)}\s*,", e)
            and "grpc_server_request_duration_seconds_bucket" in e
            and {"le", "app"} <= grouping_labels(e)
            for e in exprs
        ), f"no {name} of grpc_server_request_duration_seconds by service"
    assert any("events_published_total" in e for e in exprs), "no events published"
    assert any(
        "events_consumed_total" in e and 'outcome="applied"' in e and "consumer" in grouping_labels(e) for e in exprs
    ), "no events consumed by consumer"
    dead = [
        p for p in dashboard["panels"] for t in p.get("targets", []) if 'outcome="dead_lettered"' in t.get("expr", "")
    ]
    assert any(p["type"] == "stat" for p in dead), "no stat of the dead-lettered events"


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
    # That job copies the pod's labels onto its series: `app` tells the servers apart.
    for overlay in (DEV, PROD):
        for name in SERVERS:
            labels = render(overlay).deployment(name)["spec"]["template"]["metadata"]["labels"]
            assert labels.get("app") == name, f"{name}: its pods' app label is {labels.get('app')!r}"
            assert name in APPS["gateway"] | APPS["services"], name
