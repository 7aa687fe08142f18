#!/usr/bin/env bash
# The project's test command: installs what is missing on a fresh Debian machine, starts
# PostgreSQL and RabbitMQ when they are not running, then runs every check and test.
#
#   ci/test.sh            everything
#   ci/test.sh --quick    skip the Kubernetes/pipeline checks (for a tight edit loop)
#
# Environment: CARGO_TARGET_DIR (default ~/.cache/library-target, outside the checkout so
# repeated runs and fresh clones reuse compiled dependencies), TEST_POSTGRES_URL
# (default postgres://postgres@127.0.0.1:5432), TEST_AMQP_URL (default the local guest account).
set -euo pipefail

cd "$(dirname "$0")/.."
quick=0
[[ "${1:-}" == "--quick" ]] && quick=1

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/library-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export TEST_POSTGRES_URL="${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}"
amqp_given=${TEST_AMQP_URL:+1}
export TEST_AMQP_URL="${TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"

started=$SECONDS
stage_start=$SECONDS
stage() {
  local now=$SECONDS
  if [[ -n "${stage_name:-}" ]]; then
    printf '== %-28s %4ds\n' "$stage_name" $((now - stage_start))
  fi
  stage_name="$1"
  stage_start=$now
  echo "== $1 ..."
}

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
apt_updated=0
apt_install() {
  if [[ $apt_updated -eq 0 ]]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 1 120); do port_open "$1" && return 0; sleep 0.5; done
  echo "port $1 did not open" >&2
  return 1
}

stage "toolchain"
if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install Rust 1.94+ with rustup (https://rustup.rs) and re-run" >&2
  exit 1
fi
command -v curl >/dev/null || apt_install curl
command -v psql >/dev/null || apt_install postgresql-client
cargo --version

stage "postgresql"
if ! port_open 5432; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    apt_install postgresql
  fi
  versions=(/etc/postgresql/*/)
  version=$(printf '%s\n' "${versions[@]}" | xargs -n1 basename | sort -V | tail -n1)
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  # Tests connect as postgres over TCP without a password, as on the CI machines.
  if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || as_root pg_ctlcluster "$version" main start
  wait_port 5432
fi
psql "$TEST_POSTGRES_URL/postgres" -tAc 'select 1' >/dev/null

stage "rabbitmq"
if ! port_open 5672; then
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  as_root rabbitmq-server -detached || true
  wait_port 5672
  as_root rabbitmqctl await_startup >/dev/null 2>&1 || true
fi
# The tests declare exchanges and queues under unique names; run them in a vhost of their own,
# deleted at the end, so nothing they declare outlives the run (exchanges never expire). Also
# removes what a run that was killed left. Without rabbitmqctl (a broker in a container), or
# with TEST_AMQP_URL given, the tests use that vhost as it is.
if [[ -z $amqp_given ]] && command -v rabbitmqctl >/dev/null; then
  for vhost in $(as_root rabbitmqctl -q list_vhosts 2>/dev/null | grep '^library_test_' || true); do
    as_root rabbitmqctl -q delete_vhost "$vhost" >/dev/null 2>&1 || true
  done
  test_vhost="library_test_$(date +%s)_$$"
  if as_root rabbitmqctl -q add_vhost "$test_vhost" >/dev/null 2>&1 &&
    as_root rabbitmqctl -q set_permissions -p "$test_vhost" guest '.*' '.*' '.*' >/dev/null 2>&1; then
    export TEST_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/$test_vhost"
    trap 'as_root rabbitmqctl -q delete_vhost "$test_vhost" >/dev/null 2>&1 || true' EXIT
    echo "tests use the RabbitMQ vhost $test_vhost"
  fi
fi

stage "format"
cargo fmt --all -- --check

stage "build (debug, all targets)"
cargo build --workspace --all-targets --all-features --locked

stage "clippy"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

stage "node clients"
# The standard clients the e2e tests run against the live gateway (tests/clients): the
# GraphQL-over-HTTP audit, the full introspection query, GraphiQL in headless Chromium.
command -v node >/dev/null || apt_install nodejs npm
# Debian's chromium; where there is none but Google Chrome (GitHub's Ubuntu runners, whose
# chromium package is a snap), that one.
if [[ -z "${CHROMIUM:-}" && ! -x /usr/bin/chromium ]]; then
  if command -v google-chrome >/dev/null; then
    CHROMIUM=$(command -v google-chrome)
    export CHROMIUM
  else
    apt_install chromium
  fi
fi
echo "node $(node --version), ${CHROMIUM:-/usr/bin/chromium}"
# `npm ci` only when node_modules is missing or older than the lock file.
if [[ ! -d tests/clients/node_modules || tests/clients/package-lock.json -nt tests/clients/node_modules/.package-lock.json ]]; then
  npm ci --prefix tests/clients --no-audit --no-fund
fi

stage "python clients"
# tests/e2e/grpc_reflection.rs runs Python's standard gRPC reflection client (grpcio-reflection).
command -v python3 >/dev/null || apt_install python3 python3-pip
if ! python3 -c 'import grpc_reflection' 2>/dev/null; then
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  # Debian's own Python refuses pip outside a virtualenv (PEP 668) unless told otherwise.
  python3 -m pip install -q -r tests/grpc-clients/requirements.txt ||
    python3 -m pip install -q --break-system-packages -r tests/grpc-clients/requirements.txt
fi

stage "tests"
# Each test creates its own databases (`<prefix>_<32 hex>`); drop what earlier runs left, so
# repeated runs do not fill the disk. (Do not run two test runs against one server at once.)
psql "$TEST_POSTGRES_URL/postgres" -tAc \
  "select datname from pg_database where datname ~ '^[a-z0-9_]+_[0-9a-f]{32}$'" |
  while read -r db; do
    psql "$TEST_POSTGRES_URL/postgres" -qc "drop database if exists \"$db\" with (force)" >/dev/null 2>&1 || true
  done
cargo test --workspace --all-features --locked --no-fail-fast

if [[ $quick -eq 0 && -x ci/k8s/check.sh ]]; then
  stage "kubernetes and pipelines"
  LIBRARY_BIN_DIR="$CARGO_TARGET_DIR/debug" ci/k8s/check.sh --with-binaries
fi

stage "done"
echo "== total $((SECONDS - started))s"
