#!/usr/bin/env bash
# Benchmarks the library's four processes on PostgreSQL + RabbitMQ with library-load.
#
# Builds book-svc, borrow-svc, dashboard-svc, graphql-gateway and library-load; creates fresh
# databases; starts the processes on non-default ports (so a running demo is left alone) and times
# their start-to-ready; runs the load scenarios; samples each process's RSS; prints a summary,
# with each saga hop's latency during each scenario read off the services' /metrics (served on
# the gRPC port + 10); runs pgbench on a scratch database for reference; stops the processes with
# SIGTERM and checks they exit 0; drops everything it created.
#
# Usage: ci/bench.sh [--debug] [--duration 10s] [--events 20000] [--no-gateway] [--keep-logs]
#                    [--only SCENARIO[,SCENARIO…]]   (check-stock, borrow, borrow-at-rate, events,
#                                                     graphql-books, graphql-borrow,
#                                                     graphql-borrow-at-rate; default: all)
#
# borrow and graphql-borrow are closed loads (20 clients, each sending as soon as answered: the
# most the system does, with latency that is mostly queueing); the -at-rate scenarios send the
# targets' rates as an open load (latency counted from when each request was due), which is what
# "N per second with a p99 under X" means.
#
# Environment:
#   CARGO_TARGET_DIR     build directory (default: $HOME/.cache/library-target)
#   BENCH_POSTGRES_URL   PostgreSQL server, trust auth (default: postgres://postgres@127.0.0.1:5432)
#   BENCH_PG_SSLMODE     sslmode of every connection, the services' and pgbench's (default: disable:
#                        TLS on loopback protects nothing and costs each query a third of its CPU
#                        here; set prefer to measure what a TLS link costs)
#   BENCH_PG_OPTIONS     more options of the services' database URLs, e.g.
#                        statement-cache-capacity=24 (to measure a connection setting)
#   BENCH_AMQP_URL       RabbitMQ (default: amqp://guest:guest@127.0.0.1:5672/%2f)
#   BENCH_VHOST          1 (default): run the services in a fresh RabbitMQ vhost when rabbitmqctl
#                        can create one, so they never share queues with a running demo; 0: use
#                        BENCH_AMQP_URL's vhost as is
#   BENCH_QUEUE_POLICY   a RabbitMQ policy definition applied to every queue of the fresh vhost,
#                        e.g. '{"queue-version":2}' (to measure a broker setting)
#   BENCH_WARM_UP        how long each request scenario first runs unrecorded (default: 3s; a
#                        process that has just started still opens its database connections)
#   BENCH_BORROW_RATE    borrow-at-rate's requests per second (default: 1000, issue 4's target)
#   BENCH_PROBE_INTERVAL how often a lag probe polls (default: 25ms; the lag is read from the
#                        loan's activation time or the dashboard's update time whatever the
#                        interval)
#   BENCH_GRAPHQL_BORROW_RATE
#                        graphql-borrow-at-rate's (default: 800, issue 5's target)
#   BENCH_DIR            where logs and JSON reports go (default: a fresh temporary directory)
#   BENCH_BIN_DIR        run the binaries in this directory instead of building them (to compare
#                        two builds in alternating runs on a machine whose speed drifts)
#   BENCH_BOOK_ADDR, BENCH_BORROW_ADDR, BENCH_DASHBOARD_ADDR, BENCH_GATEWAY_ADDR
#                        where the processes listen (default: 127.0.0.1:21051, :21052, :21053,
#                        :18080)
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; }

PROFILE=release
DURATION=10s
WARM_UP="${BENCH_WARM_UP:-3s}"
PROBE_INTERVAL="${BENCH_PROBE_INTERVAL:-25ms}"
EVENTS=20000
WITH_GATEWAY=1
KEEP_LOGS=0
ONLY=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --debug) PROFILE=debug ;;
    --duration) DURATION="${2:?--duration needs a value}"; shift ;;
    --events) EVENTS="${2:?--events needs a value}"; shift ;;
    --no-gateway) WITH_GATEWAY=0 ;;
    --keep-logs) KEEP_LOGS=1 ;;
    --only) ONLY=",${2:?--only needs a value},"; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/library-target}"
PG="${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}"
AMQP_BASE="${BENCH_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
SECRET=bench-secret
SSLMODE="${BENCH_PG_SSLMODE:-disable}"
export PGSSLMODE="$SSLMODE"
SUFFIX="$(date +%s)_$$"
WORK="${BENCH_DIR:-$(mktemp -d -t library-bench.XXXXXX)}"
mkdir -p "$WORK"

# Not the defaults (a running demo keeps its ports), and below Linux's ephemeral range
# (32768-60999), where an outgoing connection of any process may hold the port for a while.
BOOK_ADDR=${BENCH_BOOK_ADDR:-127.0.0.1:21051}
BORROW_ADDR=${BENCH_BORROW_ADDR:-127.0.0.1:21052}
DASHBOARD_ADDR=${BENCH_DASHBOARD_ADDR:-127.0.0.1:21053}
GATEWAY_ADDR=${BENCH_GATEWAY_ADDR:-127.0.0.1:18080}
# Each service's Prometheus /metrics, as in the manifests (the port is the gRPC port + 10).
metrics_addr_of() { echo "${1%:*}:$((${1##*:} + 10))"; }
declare -A METRICS_ADDR=(
  [book-svc]=$(metrics_addr_of "$BOOK_ADDR")
  [borrow-svc]=$(metrics_addr_of "$BORROW_ADDR")
  [dashboard-svc]=$(metrics_addr_of "$DASHBOARD_ADDR")
)
READY_LIMIT_S=60

SERVICES=(book-svc borrow-svc dashboard-svc)
PROCESSES=("${SERVICES[@]}")
[[ $WITH_GATEWAY == 1 ]] && PROCESSES+=(graphql-gateway)

declare -A PID=() READY_MS=() IDLE_RSS=() PEAK_RSS=() END_RSS=() EXIT=()
DATABASES=()
VHOST=""
SAMPLER=""
FAILED=0

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
fail() { log "FAIL: $*"; FAILED=1; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
psql_admin() { psql "$PG/postgres" -v ON_ERROR_STOP=1 -qAtc "$1" >/dev/null; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
mib() { if [[ -n ${1:-} && $1 != 0 ]]; then awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; else echo -; fi; }

cleanup() {
  local status=$?
  [[ -n $SAMPLER ]] && kill "$SAMPLER" 2>/dev/null && wait "$SAMPLER" 2>/dev/null
  local name
  for name in "${!PID[@]}"; do
    if kill -0 "${PID[$name]}" 2>/dev/null; then
      log "stopping leftover $name (pid ${PID[$name]})"
      kill -TERM "${PID[$name]}" 2>/dev/null || true
      wait_exit "$name" 10 || kill -KILL "${PID[$name]}" 2>/dev/null || true
    fi
  done
  local db
  for db in "${DATABASES[@]}"; do
    psql_admin "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" || log "could not drop $db"
  done
  [[ -n $VHOST ]] && { rabbitmqctl -q delete_vhost "$VHOST" >/dev/null 2>&1 || log "could not delete vhost $VHOST"; }
  if [[ $KEEP_LOGS == 1 || $status != 0 || $FAILED != 0 ]]; then
    log "logs and reports kept in $WORK"
  elif [[ -z ${BENCH_DIR:-} ]]; then
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits up to $2 seconds for process $1 to exit; records its exit code.
wait_exit() {
  local name=$1 limit=$2 pid=${PID[$1]} deadline
  deadline=$(($(now_ms) + limit * 1000))
  while kill -0 "$pid" 2>/dev/null; do
    (($(now_ms) < deadline)) || return 1
    sleep 0.05
  done
  local code=0
  wait "$pid" || code=$?
  EXIT[$name]=$code
  unset "PID[$name]"
}

# create_db KIND: creates bench_KIND_<suffix> and sets DB_URL to it (not in a subshell, so the
# database is remembered for the cleanup).
create_db() {
  local db="bench_${1}_${SUFFIX}"
  psql_admin "CREATE DATABASE \"$db\""
  DATABASES+=("$db")
  DB_URL="$PG/$db?sslmode=$SSLMODE${BENCH_PG_OPTIONS:+&$BENCH_PG_OPTIONS}"
}

tcp_open() { (: >"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
http_ready() { [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://$1/readyz")" == 200 ]]; }

# start NAME READY_CHECK ADDR VAR=VALUE... : starts a process with the shared and given
# environment; records its pid and start time.
declare -A STARTED_MS=() CHECK=() ADDR=()
start() {
  local name=$1 check=$2 addr=$3
  shift 3
  STARTED_MS[$name]=$(now_ms)
  env RUST_LOG=warn AMQP_URL="$AMQP" LIBRARY_JWT_SECRET="$SECRET" \
    BOOK_GRPC_ADDR="$BOOK_ADDR" BORROW_GRPC_ADDR="$BORROW_ADDR" \
    DASHBOARD_GRPC_ADDR="$DASHBOARD_ADDR" GATEWAY_HTTP_ADDR="$GATEWAY_ADDR" \
    BOOK_SVC_URL="http://$BOOK_ADDR" BORROW_SVC_URL="http://$BORROW_ADDR" \
    DASHBOARD_SVC_URL="http://$DASHBOARD_ADDR" ${METRICS_ADDR[$name]:+METRICS_ADDR="${METRICS_ADDR[$name]}"} "$@" \
    "$BIN/$name" >"$WORK/$name.log" 2>&1 &
  PID[$name]=$!
  CHECK[$name]=$check
  ADDR[$name]=$addr
}

# Waits until every named process answers its readiness check; records start-to-ready.
await_ready() {
  local name pending=("$@") still deadline
  deadline=$(($(now_ms) + READY_LIMIT_S * 1000))
  while ((${#pending[@]} > 0)); do
    still=()
    for name in "${pending[@]}"; do
      if ! kill -0 "${PID[$name]}" 2>/dev/null; then
        wait_exit "$name" 1 || true
        fail "$name exited during start (code ${EXIT[$name]:-?}); last lines of its log:"
        tail -n 20 "$WORK/$name.log" >&2
        return 1
      elif "${CHECK[$name]}" "${ADDR[$name]}"; then
        READY_MS[$name]=$(($(now_ms) - ${STARTED_MS[$name]}))
        IDLE_RSS[$name]=$(rss_kb "${PID[$name]}")
        log "$name ready in ${READY_MS[$name]} ms (RSS $(mib "${IDLE_RSS[$name]}") MiB)"
      else
        still+=("$name")
      fi
    done
    pending=("${still[@]}")
    if ((${#pending[@]} > 0)); then
      if (($(now_ms) >= deadline)); then
        fail "not ready after ${READY_LIMIT_S}s: ${pending[*]}"
        for name in "${pending[@]}"; do tail -n 20 "$WORK/$name.log" >&2; done
        return 1
      fi
      sleep 0.02
    fi
  done
}

# Samples every running process's RSS twice a second into $WORK/rss.tsv.
start_sampler() {
  local spec=() name
  for name in "${!PID[@]}"; do spec+=("$name=${PID[$name]}"); done
  (
    while :; do
      for entry in "${spec[@]}"; do
        printf '%s\t%s\n' "${entry%%=*}" "$(rss_kb "${entry##*=}")"
      done
      sleep 0.5
    done
  ) >"$WORK/rss.tsv" &
  SAMPLER=$!
}

stop_sampler() {
  kill "$SAMPLER" 2>/dev/null || true
  wait "$SAMPLER" 2>/dev/null || true
  SAMPLER=""
  local name
  for name in "${PROCESSES[@]}"; do
    PEAK_RSS[$name]=$(awk -v n="$name" '$1 == n && $2 > max {max = $2} END {print max + 0}' "$WORK/rss.tsv")
    if [[ -n ${PID[$name]:-} ]]; then END_RSS[$name]=$(rss_kb "${PID[$name]}"); fi
  done
}

SCENARIOS=()
# Waits until the saga's queues are empty (at most 60 s), so a scenario does not inherit the
# backlog the one before left.
settle() {
  [[ -n $VHOST ]] || { sleep 5; return; }
  local deadline=$(($(now_ms) + 60000)) waiting
  while (($(now_ms) < deadline)); do
    waiting=$(rabbitmqctl -q list_queues -p "$VHOST" messages 2>/dev/null | awk 'NR > 1 {n += $1} END {print n + 0}')
    [[ $waiting == 0 ]] && return
    sleep 0.5
  done
  log "queues still hold $waiting messages after 60 s"
}
# CPU time so far, in clock ticks, one "NAME TICKS" line each: the bench's processes, PostgreSQL
# and RabbitMQ (every process of theirs) and the whole machine (busy: neither idle nor waiting).
CLK_TCK=$(getconf CLK_TCK)
CPU_COLUMNS=(machine postgres rabbitmq "${PROCESSES[@]}")
# User + system ticks of the processes whose /proc/PID/stat files are given (none: 0). A process
# that exits meanwhile (a PostgreSQL backend) counts 0 instead of failing the sum.
ticks_of() { { cat /dev/null "$@" 2>/dev/null || true; } | awk '{sub(/^.*\) /, ""); t += $12 + $13} END {print t + 0}'; }
stats_of() { local pid; for pid in $(pgrep -x "$1"); do echo "/proc/$pid/stat"; done; }
cpu_ticks() {
  awk '/^cpu / {print "machine", $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat
  # shellcheck disable=SC2046 # one file name per word
  echo "postgres $(ticks_of $(stats_of postgres))"
  # shellcheck disable=SC2046
  echo "rabbitmq $(ticks_of $(stats_of beam.smp))"
  local name
  for name in "${PROCESSES[@]}"; do
    if [[ -n ${PID[$name]:-} ]]; then echo "$name $(ticks_of "/proc/${PID[$name]}/stat")"; fi
  done
}
# Each service's event-bus histograms now, one "SERVICE SERIES LE COUNT" line per bucket.
event_buckets() {
  local name
  for name in "${SERVICES[@]}"; do
    curl -s --max-time 2 "http://${METRICS_ADDR[$name]}/metrics" |
      awk -v s="$name" '/^events_[a-z_]*_seconds_bucket/ {
        series = $1; sub(/_bucket\{/, "{", series); le = series; sub(/.*le="/, "", le); sub(/".*/, "", le)
        sub(/,?le="[^"]*"/, "", series); print s, series, le, $2 }'
  done
}
# scenario NAME ARGS... : runs one library-load subcommand, printing its report and keeping the
# JSON for the summary, the cores each process used meanwhile (warm-up included) and how the
# saga's hops went meanwhile (the event-bus histograms' growth).
scenario() {
  local name=$1 before started
  shift
  [[ -z $ONLY || $ONLY == *",$name,"* ]] || return 0
  log "scenario $name: library-load $*"
  event_buckets >"$WORK/$name.buckets-before"
  before=$(cpu_ticks)
  started=$(now_ms)
  if "$BIN/library-load" "$@" --json-file "$WORK/$name.json"; then
    SCENARIOS+=("$name")
    # Ticks used over the wall time: cores busy on average.
    awk -v hz="$CLK_TCK" -v ms=$(($(now_ms) - started)) 'NR == FNR {t[$1] = $2; next}
      $1 in t {printf "%s %.2f\n", $1, ($2 - t[$1]) / hz / (ms / 1000)}' \
      <(echo "$before") <(cpu_ticks) >"$WORK/$name.cpu"
    event_buckets >"$WORK/$name.buckets-after"
  else
    fail "scenario $name failed"
  fi
  echo
}

# --- build -----------------------------------------------------------------------------------
BUILD_FLAGS=()
[[ $PROFILE == release ]] && BUILD_FLAGS+=(--release)
PACKAGES=(-p book-svc -p borrow-svc -p dashboard-svc -p library-load)
[[ $WITH_GATEWAY == 1 ]] && PACKAGES+=(-p graphql-gateway)
log "building ($PROFILE) into $CARGO_TARGET_DIR"
if [[ -n "${BENCH_BIN_DIR:-}" ]]; then
  BIN="$BENCH_BIN_DIR"
else
  (cd "$ROOT" && cargo build "${BUILD_FLAGS[@]}" "${PACKAGES[@]}")
  BIN="$CARGO_TARGET_DIR/$PROFILE"
fi

# --- infrastructure --------------------------------------------------------------------------
pg_isready -q -d "$PG/postgres" || { log "PostgreSQL is not reachable at $PG"; exit 1; }
AMQP="$AMQP_BASE"
if [[ ${BENCH_VHOST:-1} == 1 ]] && command -v rabbitmqctl >/dev/null &&
  rabbitmqctl -q add_vhost "library_bench_$SUFFIX" >/dev/null 2>&1; then
  VHOST="library_bench_$SUFFIX"
  user="$(sed -E 's#^amqps?://([^:@/]*).*#\1#' <<<"$AMQP_BASE")"
  rabbitmqctl -q set_permissions -p "$VHOST" "${user:-guest}" '.*' '.*' '.*' >/dev/null
  AMQP="${AMQP_BASE%/*}/$VHOST"
  log "services use the fresh RabbitMQ vhost $VHOST"
  if [[ -n ${BENCH_QUEUE_POLICY:-} ]]; then
    rabbitmqctl -q set_policy -p "$VHOST" --apply-to queues bench-queues '.*' "$BENCH_QUEUE_POLICY" >/dev/null
    log "queue policy of the vhost: $BENCH_QUEUE_POLICY"
  fi
else
  log "services use $AMQP_BASE as is (queues are shared with anything else on that vhost)"
fi
create_db book
BOOK_DB=$DB_URL
create_db borrow
BORROW_DB=$DB_URL
create_db dashboard
DASHBOARD_DB=$DB_URL

# --- start -----------------------------------------------------------------------------------
start book-svc tcp_open "$BOOK_ADDR" DATABASE_URL="$BOOK_DB"
start borrow-svc tcp_open "$BORROW_ADDR" DATABASE_URL="$BORROW_DB"
start dashboard-svc tcp_open "$DASHBOARD_ADDR" DATABASE_URL="$DASHBOARD_DB"
await_ready "${SERVICES[@]}" || exit 1
GATEWAY_UP=0
if [[ $WITH_GATEWAY == 1 ]]; then
  start graphql-gateway http_ready "$GATEWAY_ADDR"
  await_ready graphql-gateway && GATEWAY_UP=1
fi

# --- load ------------------------------------------------------------------------------------
start_sampler
scenario check-stock check-stock --book-url "http://$BOOK_ADDR" --concurrency 32 --duration "$DURATION" --warm-up "$WARM_UP"
# The open loads first: a closed load leaves the saga a backlog the next scenario would inherit.
# A probe reads the lag from the loan's activation time or the dashboard's update time, so it
# need not poll often (its polls are calls to the system it measures).
scenario borrow-at-rate borrow --borrow-url "http://$BORROW_ADDR" --book-url "http://$BOOK_ADDR" \
  --concurrency 20 --duration "$DURATION" --warm-up "$WARM_UP" --rate "${BENCH_BORROW_RATE:-1000}" \
  --probe-interval "$PROBE_INTERVAL"
scenario borrow borrow --borrow-url "http://$BORROW_ADDR" --book-url "http://$BOOK_ADDR" \
  --concurrency 20 --duration "$DURATION" --warm-up "$WARM_UP" --probe-interval "$PROBE_INTERVAL"
settle
scenario events events --database-url "$PG/postgres?sslmode=$SSLMODE" --amqp-url "$AMQP_BASE" --count "$EVENTS"
if [[ $GATEWAY_UP == 1 ]]; then
  scenario graphql-books graphql-books --url "http://$GATEWAY_ADDR/graphql" \
    --concurrency 20 --duration "$DURATION" --warm-up "$WARM_UP"
  scenario graphql-borrow-at-rate graphql-borrow --url "http://$GATEWAY_ADDR/graphql" \
    --jwt-secret "$SECRET" --concurrency 20 --duration "$DURATION" --warm-up "$WARM_UP" \
    --rate "${BENCH_GRAPHQL_BORROW_RATE:-800}" --probe-interval "$PROBE_INTERVAL"
  scenario graphql-borrow graphql-borrow --url "http://$GATEWAY_ADDR/graphql" \
    --jwt-secret "$SECRET" --concurrency 20 --duration "$DURATION" --warm-up "$WARM_UP" \
    --probe-interval "$PROBE_INTERVAL"
else
  log "gateway not running: GraphQL scenarios skipped"
fi
sleep 1
stop_sampler

# --- summary ---------------------------------------------------------------------------------
echo "== processes ($PROFILE build; RSS in MiB: once ready, peak during the load, after it)"
printf '%-16s %9s %9s %9s %9s\n' process ready_ms rss_idle rss_peak rss_end
for name in "${PROCESSES[@]}"; do
  printf '%-16s %9s %9s %9s %9s\n' "$name" "${READY_MS[$name]:--}" \
    "$(mib "${IDLE_RSS[$name]:-}")" "$(mib "${PEAK_RSS[$name]:-}")" "$(mib "${END_RSS[$name]:-}")"
done
echo
echo "== scenarios ($PROFILE build; latency of successful requests, ms)"
printf '%-22s %9s %8s %10s %9s %9s %9s %9s  %s\n' scenario requests errors req/s p50 p90 p99 max lag
for name in "${SCENARIOS[@]}"; do
  jq -r --arg name "$name" '
    def ms: if . == null then "-" else (. / 1000 | tostring) end;
    [ $name, (.requests | tostring), (.errors | tostring), (.throughput_rps | round | tostring),
      (.latency.p50_us | ms), (.latency.p90_us | ms), (.latency.p99_us | ms), (.latency.max_us | ms),
      ([.lags[] | "\(.name): p50 \(.latency.p50_us | ms) p99 \(.latency.p99_us | ms) max \(.latency.max_us | ms) (n=\(.reached)/\(.samples), timeouts \(.timeouts))"]
       + (if .figures.end_to_end_eps then ["end-to-end \(.figures.end_to_end_eps | round) ev/s, enqueue \(.figures.enqueue_eps | round) ev/s"] else [] end)
       | join("; ")) ]
    | @tsv' "$WORK/$name.json" |
    awk -F'\t' '{ printf "%-22s %9s %8s %10s %9s %9s %9s %9s  %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9 }'
  jq -r '.errors_by_kind | to_entries[] | "    error \(.key): \(.value)"' "$WORK/$name.json"
done
echo

echo "== CPU during each scenario (warm-up included): cores busy on average, of $(nproc) (rest: the"
echo "   load generator, the kernel and anything else); the machine's CPU per request, in ms"
printf '%-22s' scenario
printf ' %9s' "${CPU_COLUMNS[@]/#graphql-/}" rest ms/req
echo
for name in "${SCENARIOS[@]}"; do
  [[ -f $WORK/$name.cpu ]] || continue
  printf '%-22s' "$name"
  for column in "${CPU_COLUMNS[@]}"; do
    printf ' %9s' "$(awk -v c="$column" '$1 == c {print $2}' "$WORK/$name.cpu")"
  done
  rps=$(jq -r '.throughput_rps // 0' "$WORK/$name.json")
  awk -v rps="$rps" '$1 == "machine" {busy = $2; next} {listed += $2}
    END {printf " %9.2f %9s\n", busy - listed, (rps > 0) ? sprintf("%.2f", busy * 1000 / rps) : "-"}' \
    "$WORK/$name.cpu"
done
echo

echo "== saga hops during each scenario (warm-up included), from the services' histograms: a"
echo "   relay's batch publication until the broker confirmed it, and an event's lag from its"
echo "   transaction to its consumer's commit; ms, interpolated within the quantile's bucket (coarse:"
echo "   the buckets' bounds are 1, 2.5, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 250, 500 ms, …)"
printf '%-22s %-14s %-44s %8s %7s %7s\n' scenario service series count p50 p99
for name in "${SCENARIOS[@]}"; do
  [[ -f $WORK/$name.buckets-after ]] || continue
  awk -v scenario="$name" 'FILENAME == ARGV[1] {before[$1 " " $2 " " $3] = $4; next}
    {key = $1 " " $2; d = $4 - before[$1 " " $2 " " $3]; if (!(key in seen)) {seen[key] = 1; order[++n] = key}
     les[key] = les[key] " " $3; count[key, $3] = d; if ($3 == "+Inf") total[key] = d}
    # Linear within the bucket the rank falls in, as PromQL histogram_quantile does.
    function quantile(key, q,    m, i, parts, rank, c, low, below) {
      m = split(les[key], parts, " "); rank = q * total[key]; low = 0; below = 0
      for (i = 1; i <= m; i++) {
        c = count[key, parts[i]]
        if (c >= rank) {
          if (parts[i] == "+Inf") return "inf"
          return sprintf("%.1f", (low + (parts[i] - low) * (c > below ? (rank - below) / (c - below) : 1)) * 1000)
        }
        low = parts[i]; below = c
      }
    }
    END {for (i = 1; i <= n; i++) {key = order[i]; if (total[key] == 0) continue; split(key, k, " ")
      printf "%-22s %-14s %-44s %8d %7s %7s\n", scenario, k[1], k[2], total[key], quantile(key, 0.5), quantile(key, 0.99)}}' \
    "$WORK/$name.buckets-before" "$WORK/$name.buckets-after"
done
echo

# --- pgbench reference -----------------------------------------------------------------------
create_db pgbench
PGBENCH_DB=$DB_URL
if pgbench -i -q "$PGBENCH_DB" >"$WORK/pgbench-init.log" 2>&1 &&
  pgbench -N -c 20 -j 2 -T 10 "$PGBENCH_DB" >"$WORK/pgbench.log" 2>&1; then
  echo "== pgbench -N -c 20 -j 2 -T 10 (reference, same machine, sslmode=$SSLMODE)"
  grep -E '^(tps|latency average|number of transactions actually processed)' "$WORK/pgbench.log"
else
  fail "pgbench failed (see $WORK/pgbench.log)"
fi
echo

# --- stop ------------------------------------------------------------------------------------
for name in graphql-gateway dashboard-svc borrow-svc book-svc; do
  [[ -n ${PID[$name]:-} ]] || continue
  kill -TERM "${PID[$name]}" 2>/dev/null || true
  if wait_exit "$name" 15; then
    if [[ ${EXIT[$name]} == 0 ]]; then
      log "$name stopped on SIGTERM with exit code 0"
    else
      fail "$name exited with code ${EXIT[$name]} on SIGTERM"
    fi
  else
    fail "$name did not stop within 15s of SIGTERM"
    kill -KILL "${PID[$name]}" 2>/dev/null || true
  fi
done
# Log lines by level (the level is upper case in both the text and the JSON format).
for name in "${PROCESSES[@]}"; do
  [[ -f $WORK/$name.log ]] || continue
  warnings=$(grep -c 'WARN' "$WORK/$name.log" || true)
  errors=$(grep -cE 'ERROR|panicked' "$WORK/$name.log" || true)
  if ((warnings + errors > 0)); then
    log "$name logged $warnings WARN and $errors ERROR/panic lines (see $WORK/$name.log)"
    KEEP_LOGS=1
  fi
done

if [[ $FAILED != 0 ]]; then
  log "bench finished with failures"
  exit 1
fi
log "bench finished"
