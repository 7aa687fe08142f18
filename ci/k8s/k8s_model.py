"""Rendered Kubernetes manifests, read the way the API server and the kubelet read them.

`render(dir)` runs `kubectl kustomize` once per directory; `Manifests` answers the questions the
tests ask (which Deployment does a Service select, which port does a named targetPort mean, what
environment does a container get). Kept free of pytest so that both test modules and a person at
a Python prompt can use it.
"""

from __future__ import annotations

import base64
import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"

BASE = K8S / "base"
DEV = K8S / "overlays" / "dev"
PROD = K8S / "overlays" / "prod"
OBSERVABILITY = K8S / "observability"
KUSTOMIZATIONS = {
    "base": BASE,
    "dev": DEV,
    "prod": PROD,
    "observability": OBSERVABILITY,
}

# The four servers, in the order they must start (each dials the ones before it).
SERVERS = ["book-svc", "borrow-svc", "dashboard-svc", "graphql-gateway"]
GRPC_PORTS = {"book-svc": 50051, "borrow-svc": 50052, "dashboard-svc": 50053}
# Where each gRPC service serves Prometheus /metrics (METRICS_ADDR); the gateway serves its own
# on its HTTP port.
METRICS_PORT = 9464
IMAGE_REPOSITORY = "ghcr.io/library-circulation"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


def kubectl() -> str:
    found = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not found:
        raise RuntimeError("kubectl not found: run ci/k8s/check.sh, or set KUBECTL")
    return found


@functools.lru_cache(maxsize=None)
def render(directory: Path | str) -> "Manifests":
    result = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return Manifests([d for d in yaml.safe_load_all(result.stdout) if d])


def selector_matches(selector: dict | None, labels: dict) -> bool:
    """A LabelSelector (matchLabels + matchExpressions) against a label set."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def image_parts(image: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of an image reference."""
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        repository, tag = image.rsplit(":", 1)
        return repository, tag, digest
    return image, None, digest


class Manifests:
    def __init__(self, docs: list[dict]):
        self.docs = docs

    def of_kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d.get("kind") == kind]

    def find(self, kind: str, name: str) -> dict | None:
        for d in self.of_kind(kind):
            if d["metadata"]["name"] == name:
                return d
        return None

    def get(self, kind: str, name: str) -> dict:
        found = self.find(kind, name)
        if found is None:
            raise KeyError(f"no {kind}/{name} in the rendered manifests")
        return found

    @property
    def workloads(self) -> list[dict]:
        return [d for d in self.docs if d.get("kind") in WORKLOAD_KINDS]

    def deployment(self, name: str) -> dict:
        return self.get("Deployment", name)

    def server_container(self, name: str) -> dict:
        containers = pod_spec(self.deployment(name))["containers"]
        assert len(containers) == 1, f"{name}: expected one container, found {len(containers)}"
        return containers[0]

    def workloads_selected_by(self, service: dict) -> list[dict]:
        selector = {"matchLabels": service["spec"].get("selector") or {}}
        if not selector["matchLabels"]:
            return []
        return [
            w
            for w in self.workloads
            if selector_matches(selector, w["spec"]["template"]["metadata"].get("labels") or {})
        ]

    def services_selecting(self, workload: dict) -> list[dict]:
        return [s for s in self.of_kind("Service") if workload in self.workloads_selected_by(s)]

    def config_map_data(self, name: str) -> dict[str, str]:
        return dict(self.get("ConfigMap", name).get("data") or {})

    def secret_data(self, name: str) -> dict[str, str]:
        secret = self.get("Secret", name)
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        data.update(secret.get("stringData") or {})
        return data

    def container_env(self, container: dict, field_values: dict[str, str] | None = None) -> dict[str, str]:
        """The environment the kubelet gives `container`: envFrom first, then env (which wins),
        with $(VAR) references expanded as Kubernetes does. Secrets and ConfigMaps must be in
        the rendered manifests (true for the dev overlay)."""
        field_values = field_values or {}
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                data = self.config_map_data(source["configMapRef"]["name"])
            elif "secretRef" in source:
                data = self.secret_data(source["secretRef"]["name"])
            else:
                raise ValueError(f"unsupported envFrom source {source}")
            env.update({prefix + k: v for k, v in data.items()})
        for var in container.get("env") or []:
            name = var["name"]
            if "value" in var:
                env[name] = expand_references(var["value"], env)
            elif "valueFrom" in var:
                source = var["valueFrom"]
                if "configMapKeyRef" in source:
                    ref = source["configMapKeyRef"]
                    env[name] = self.config_map_data(ref["name"])[ref["key"]]
                elif "secretKeyRef" in source:
                    ref = source["secretKeyRef"]
                    env[name] = self.secret_data(ref["name"])[ref["key"]]
                elif "fieldRef" in source:
                    env[name] = field_values[source["fieldRef"]["fieldPath"]]
                else:
                    raise ValueError(f"unsupported valueFrom {source}")
            else:
                env[name] = ""
        return env


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def all_containers(spec: dict) -> list[dict]:
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def container_port(container: dict, port: int | str) -> int:
    """The containerPort a Service targetPort or a probe port means (names resolve)."""
    for p in container.get("ports") or []:
        if port == p.get("name") or port == p["containerPort"]:
            return p["containerPort"]
    raise KeyError(f"container {container['name']} declares no port {port!r}")


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand_references(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known variables expand, unknown ones stay, $$ escapes."""

    def replace(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _REFERENCE.sub(replace, value)


def probes(container: dict) -> dict[str, dict]:
    return {
        kind: container[kind]
        for kind in ("startupProbe", "readinessProbe", "livenessProbe")
        if kind in container
    }


def prestop_sleep_seconds(container: dict) -> int:
    pre_stop = (container.get("lifecycle") or {}).get("preStop") or {}
    return int((pre_stop.get("sleep") or {}).get("seconds", 0))
