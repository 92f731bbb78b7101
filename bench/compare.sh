#!/usr/bin/env bash
# Side-by-side benchmark: our bench-services against the Restate server 1.7 with the same
# services on Restate's Rust SDK (bench/restate-services), driven by the same load driver
# (examples/src/bin/loadgen.rs) on this machine, one side after the other.
#
#   bench/compare.sh [--seconds N] [--driver wrk|reqwest] [--warmup SECS] [--out DIR]
#                    [--runs N] [--max-other-cpu SECS] [--tries N] [--no-fsync-check]
#                    [--quiet-wait SECS] [--note TEXT] [--postgres]
#
# It installs what it needs (Debian's wrk via apt when the driver is wrk; the pinned
# @restatedev/restate-server via `npm ci` in bench/), builds our bench-services and loadgen in
# release from the workspace and the Restate-side app in release with its own target dir,
# runs our side, then Restate's, each process with a clean environment (`env -i`; Restate's
# server reads every RESTATE_* variable as its own configuration), and prints both tables, the
# ratio table, each side's durability settings and, with strace available, how many fsyncs
# each server makes for 200 sequential echo requests. --runs N repeats both sides N times
# (alternating, ours first) and summarizes medians and ranges (bench/summarize.js). Each row
# reports "other CPU s", the busy CPU time of everything else on the machine during the row:
# a machine shared with builds or tests shows up there. A row with more than --max-other-cpu
# of it (default: a tenth of the row's length) is run again once the machine is quiet, up to
# --tries (default 3) attempts; the least disturbed one is reported. Results also land in
# --out (default: a new temp dir). --postgres adds our side on PostgreSQL to each run (a
# private cluster that loadgen starts, Debian's package installed when missing): one process,
# then two sharing the partitions (the load through the second), each against Restate's rows,
# with the DBOS Transact figures of ../shared/anchors/postgres.md quoted beside them.
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
SECS=5
DRIVER=wrk
WARMUP=2
OUT=""
FSYNC_CHECK=1
QUIET_WAIT=300
NOTE=""
RUNS=1
MAX_OTHER=""
TRIES=3
PG=0
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECS="$2"; shift 2 ;;
    --driver) DRIVER="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --no-fsync-check) FSYNC_CHECK=0; shift ;;
    --quiet-wait) QUIET_WAIT="$2"; shift 2 ;;
    --note) NOTE="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --max-other-cpu) MAX_OTHER="$2"; shift 2 ;;
    --tries) TRIES="$2"; shift 2 ;;
    --postgres) PG=1; shift ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
OUT="${OUT:-$(mktemp -d /tmp/bench-compare.XXXXXX)}"
MAX_OTHER="${MAX_OTHER:-$(default_max_other "$SECS")}"
mkdir -p "$OUT"
rm -f "$OUT"/ours-*.tsv "$OUT"/restate-*.tsv "$OUT"/pg1-*.tsv "$OUT"/pg2-*.tsv

# ---------------------------------------------------------------- install and build
if [ "$DRIVER" = wrk ] && ! command -v wrk >/dev/null; then apt_install wrk; fi
if [ "$PG" = 1 ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt_install postgresql
fi
log "npm ci (bench/: @restatedev/restate-server, pinned in package-lock.json)"
(cd "$BENCH" && SCARF_ANALYTICS=false npm ci --ignore-scripts --no-audit --no-fund >/dev/null)
RESTATE_SERVER="$(cd "$BENCH" && node -e 'const p=require("path");const d=p.dirname(require.resolve("@restatedev/restate-server-linux-x64/package.json"));console.log(p.join(d,"bin","restate-server"))')"
[ -x "$RESTATE_SERVER" ] || { echo "no restate-server binary at $RESTATE_SERVER" >&2; exit 1; }

log "building bench-services and loadgen (release, workspace)"
(cd "$ROOT" && env -u CARGO_TARGET_DIR cargo build --release -p examples --bin bench-services --bin loadgen)
log "building bench/restate-services (release, own workspace and target dir)"
(cd "$BENCH/restate-services" && CARGO_TARGET_DIR="$BENCH/restate-services/target" cargo build --release --locked)
LOADGEN="$ROOT/target/release/loadgen"
OURS_BIN="$ROOT/target/release/bench-services"
SDK_BIN="$BENCH/restate-services/target/release/restate-bench-services"

# ---------------------------------------------------------------- helpers
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_free_not() { ! port_free "$1"; }
free_port() { # the first free port from $1 upwards (callers start 100 apart)
  local p=$1
  while ! port_free "$p"; do p=$((p + 1)); done
  echo "$p"
}
wait_for() { # wait_for DESCRIPTION COMMAND...: retries for up to 60 s
  local what=$1; shift
  for _ in $(seq 1 600); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "timed out waiting for $what (logs in $OUT)" >&2; exit 1
}
busy_jiffies() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9; exit}' /proc/stat; }
# Busy share of all CPUs over 2 s, in percent.
busy_pct() {
  local a b ta tb
  a=$(busy_jiffies); ta=$(awk '/^cpu /{s=0; for(i=2;i<=NF;i++) s+=$i; print s; exit}' /proc/stat)
  sleep 2
  b=$(busy_jiffies); tb=$(awk '/^cpu /{s=0; for(i=2;i<=NF;i++) s+=$i; print s; exit}' /proc/stat)
  echo $(( (b - a) * 100 / (tb - ta) ))
}
# Waits (up to --quiet-wait s) until the machine is idle, and says what else was running.
wait_quiet() {
  local waited=0 pct
  pct=$(busy_pct)
  while [ "$pct" -gt 10 ] && [ "$waited" -lt "$QUIET_WAIT" ]; do
    echo "machine busy ${pct}% (others running), waiting..." >&2
    sleep 8; waited=$((waited + 10)); pct=$(busy_pct)
  done
  echo "machine busy ${pct}% before this side; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  ps -eo pcpu,etime,comm --sort=-pcpu | awk 'NR>1 && $1>1.0' | head -5 | sed 's/^/  busy: /' >&2 || true
}

TMPDIRS=()
cleanup() { # this shell's own background processes that still run, then the temp dirs
  local jobs_left
  jobs_left="$(jobs -p)"
  if [ -n "$jobs_left" ]; then kill $jobs_left 2>/dev/null || true; wait 2>/dev/null || true; fi
  for d in "${TMPDIRS[@]:-}"; do [ -n "$d" ] && rm -rf "$d"; done
}
trap cleanup EXIT

# fsyncs made by process $1 while 200 sequential echo requests go to $2 (strace -f -c).
fsync_check() {
  local pid=$1 url=$2 trace spid
  trace="$OUT/strace-$pid.txt"
  strace -f -c -e trace=fsync,fdatasync,sync_file_range,syncfs -p "$pid" -o "$trace" 2>/dev/null &
  spid=$!
  sleep 1
  for _ in $(seq 1 200); do
    curl -sf -X POST "$url/Noop/echo" -H 'content-type: application/json' -d '{"hello":"world","n":42}' >/dev/null
  done
  sleep 0.5
  kill -INT "$spid"; wait "$spid" 2>/dev/null || true
  # strace -c columns: % time, seconds, usecs/call, calls, [errors], syscall
  awk '$NF ~ /^(fsync|fdatasync|sync_file_range|syncfs)$/ {printf "%s%s %s", sep, $4, $NF; sep="; "}' "$trace"
}

MACHINE="$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r)"
if COMMIT="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)"; then
  DIRTY="$(cd "$ROOT" && git status --porcelain -- restate-runtime restate-macros examples | wc -l)"
  COMMIT="commit $COMMIT ($DIRTY uncommitted files under restate-runtime/, restate-macros/, examples/)"
else
  COMMIT="not a git checkout"
fi
RS_VERSION="$(env -i PATH=$CLEAN_PATH "$RESTATE_SERVER" --version)"
SDK_VERSION="$(awk '/^name = "restate-sdk"$/{getline; print $3}' "$BENCH/restate-services/Cargo.lock" | tr -d '"')"
DRIVER_VERSION="$DRIVER"; [ "$DRIVER" = wrk ] && DRIVER_VERSION="wrk $(dpkg-query -W -f='${Version}' wrk 2>/dev/null || echo '?')"

# ---------------------------------------------------------------- our side
run_ours() { # run number
  log "run $1 of $RUNS, our side: bench-services (started by loadgen with a clean environment)"
  wait_quiet
  env -i PATH="$CLEAN_PATH" HOME="$OUT" "$LOADGEN" --driver "$DRIVER" --seconds "$SECS" \
    --warmup "$WARMUP" --max-other-cpu "$MAX_OTHER" --tries "$TRIES" \
    --label "ours" --tsv "$OUT/ours-$1.tsv" | tee "$OUT/ours-$1.md"
}

# Ours on PostgreSQL: $2 = pg1 (one process) or pg2 (two, the load through the second).
run_ours_pg() { # run number, pg1|pg2
  local more=()
  [ "$2" = pg2 ] && more=(--standbys 1)
  log "run $1 of $RUNS, our side on PostgreSQL ($2): a private cluster started by loadgen"
  # runuser (PostgreSQL refuses to run as root) is in sbin.
  wait_quiet
  # PostgreSQL's own processes are part of this side, yet count as "other CPU s": no retries.
  env -i PATH="$CLEAN_PATH:/usr/sbin:/sbin" HOME="$OUT" "$LOADGEN" --postgres "${more[@]}" --driver "$DRIVER" \
    --seconds "$SECS" --warmup "$WARMUP" --max-other-cpu 1000000 --tries 1 \
    --label "ours-$2" --tsv "$OUT/$2-$1.tsv" | tee "$OUT/$2-$1.md"
}

OURS_FSYNC="not measured"
ours_fsync_check() { # a separate fresh instance, after the load
  local P D OPID
  P=$(free_port 20000)
  D=$(mktemp -d /tmp/bench-ours.XXXXXX); TMPDIRS+=("$D")
  env -i PATH="$CLEAN_PATH" RUST_LOG=warn RESTATE_DATA_DIR="$D/data" \
    RESTATE_INGRESS_ADDR="127.0.0.1:$P" RESTATE_ADMIN_ADDR=127.0.0.1:0 "$OURS_BIN" >/dev/null 2>&1 &
  OPID=$!
  wait_for "bench-services health" curl -sf "http://127.0.0.1:$P/restate/health"
  OURS_FSYNC="$(fsync_check "$OPID" "http://127.0.0.1:$P")"
  kill "$OPID"; wait "$OPID" 2>/dev/null || true
}

# ---------------------------------------------------------------- Restate's side
RS_FSYNC="not measured"
RS_DB_WAL=""
RS_LOG_WAL=""
run_restate() { # run number
  log "run $1 of $RUNS, Restate's side: $RS_VERSION + restate-sdk $SDK_VERSION (clean environments)"
  local RS_DIR INGRESS ADMIN NODE SDK RS_PID SDK_PID
  RS_DIR=$(mktemp -d /tmp/bench-restate.XXXXXX); TMPDIRS+=("$RS_DIR")
  INGRESS=$(free_port 21000); ADMIN=$(free_port 21100); NODE=$(free_port 21200); SDK=$(free_port 21300)
  # Defaults except: own ports and base dir, TCP only, no telemetry, quiet logs.
  printf '%s\n' \
    "base-dir = \"$RS_DIR/data\"" \
    'listen-mode = "tcp"' \
    "bind-address = \"127.0.0.1:$NODE\"" \
    "advertised-address = \"http://127.0.0.1:$NODE/\"" \
    'disable-telemetry = true' \
    'log-filter = "warn"' \
    '' '[ingress]' "bind-address = \"127.0.0.1:$INGRESS\"" \
    '' '[admin]' "bind-address = \"127.0.0.1:$ADMIN\"" > "$RS_DIR/restate.toml"
  env -i PATH="$CLEAN_PATH" HOME="$RS_DIR" "$RESTATE_SERVER" --no-logo --config-file "$RS_DIR/restate.toml" \
    > "$OUT/restate-server-$1.log" 2>&1 &
  RS_PID=$!
  env -i PATH="$CLEAN_PATH" "$SDK_BIN" "$SDK" > "$OUT/restate-services-$1.log" 2>&1 &
  SDK_PID=$!
  wait_for "restate-server admin health" curl -sf "http://127.0.0.1:$ADMIN/health"
  wait_for "restate-bench-services" port_free_not "$SDK"
  wait_for "deployment registration" curl -sf -o "$OUT/deployment.json" -X POST \
    "http://127.0.0.1:$ADMIN/deployments" -H 'content-type: application/json' \
    -d "{\"uri\":\"http://127.0.0.1:$SDK\"}"
  # Registered: wait until the services answer through the ingress.
  wait_for "Noop/echo through the ingress" curl -sf -X POST "http://127.0.0.1:$INGRESS/Noop/echo" \
    -H 'content-type: application/json' -d '{}'
  wait_for "Counter/get through the ingress" curl -sf -X POST "http://127.0.0.1:$INGRESS/Counter/probe/get"
  wait_quiet
  env -i PATH="$CLEAN_PATH" HOME="$OUT" "$LOADGEN" --url "http://127.0.0.1:$INGRESS" \
    --pid "$RS_PID,$SDK_PID" --driver "$DRIVER" --seconds "$SECS" --warmup "$WARMUP" \
    --max-other-cpu "$MAX_OTHER" --tries "$TRIES" \
    --label "Restate" --tsv "$OUT/restate-$1.tsv" | tee "$OUT/restate-$1.md"

  if [ "$1" = 1 ]; then
    if [ "$FSYNC_CHECK" = 1 ] && command -v strace >/dev/null; then
      RS_FSYNC="$(fsync_check "$RS_PID" "http://127.0.0.1:$INGRESS")"
    fi
    RS_DB_WAL="$(find "$RS_DIR/data" -path '*/db/*.log' -printf '%s ' 2>/dev/null)"
    RS_LOG_WAL="$(find "$RS_DIR/data" -path '*/log-store/*.log' -printf '%s ' 2>/dev/null)"
    env -i PATH="$CLEAN_PATH" HOME="$RS_DIR" "$RESTATE_SERVER" --config-file "$RS_DIR/restate.toml" \
      --dump-config > "$OUT/restate-effective-config.toml" 2>/dev/null || true
  fi
  kill "$RS_PID" "$SDK_PID" 2>/dev/null || true
  wait "$RS_PID" "$SDK_PID" 2>/dev/null || true
  rm -rf "$RS_DIR"
}

# ---------------------------------------------------------------- the runs
for run in $(seq 1 "$RUNS"); do
  run_ours "$run"
  if [ "$run" = 1 ] && [ "$FSYNC_CHECK" = 1 ] && command -v strace >/dev/null; then ours_fsync_check; fi
  if [ "$PG" = 1 ]; then run_ours_pg "$run" pg1; run_ours_pg "$run" pg2; fi
  run_restate "$run"
done

# ---------------------------------------------------------------- report
cfg() { # value of key $2 in section [$1] of the dumped config ("" = top level)
  awk -v sec="[$1]" -v key="$2" '
    /^\[/ {cur=$0; next}
    (sec=="[]" && cur=="" || cur==sec) && $1==key {sub(/^[^=]*= */, ""); print; exit}
  ' "$OUT/restate-effective-config.toml"
}
{
  echo
  echo "## Side by side: ours vs $RS_VERSION"
  echo
  echo "Machine: $MACHINE. Driver: $DRIVER_VERSION, $SECS s per row, warmup $WARMUP s, $RUNS run(s), each: ours, then Restate."
  echo "Rows with more than $MAX_OTHER CPU s of foreign load were retried (up to $TRIES attempts, least disturbed kept)."
  echo "Ours: $COMMIT."
  echo "Restate: $RS_VERSION, restate-sdk $SDK_VERSION (bench/restate-services, TCP_NODELAY)."
  if [ -n "$NOTE" ]; then echo "Note: $NOTE"; fi
  for run in $(seq 1 "$RUNS"); do
    echo
    echo "### Run $run, ours"
    echo
    sed -n '/^| scenario/,$p' "$OUT/ours-$run.md"
    echo
    echo "### Run $run, Restate"
    echo
    sed -n '/^| scenario/,$p' "$OUT/restate-$run.md"
  done
  echo
  echo "### Ours / Restate"
  echo
  node "$BENCH/summarize.js" "$SECS" "$(tsvs ours)" "$(tsvs restate)"
  echo
  if [ "$PG" = 1 ]; then
    for side in pg1 pg2; do
      case "$side" in
        pg1) what="ours on PostgreSQL, one process" ;;
        pg2) what="ours on PostgreSQL, two processes sharing the partitions (the load through the second)" ;;
      esac
      for run in $(seq 1 "$RUNS"); do
        echo
        echo "### Run $run, $what"
        echo
        sed -n '/^| scenario/,$p' "$OUT/$side-$run.md"
      done
      echo
      echo "### ${what^} / Restate"
      echo
      node "$BENCH/summarize.js" "$SECS" "$(tsvs "$side")" "$(tsvs restate)"
    done
    echo
    echo "DBOS Transact 3.4.0 on the same kind of machine and PostgreSQL 15 (../shared/anchors/postgres.md,"
    echo "not run here): echo workflow 258 req/s at 1, 312 at 64; 3 steps 55 / 56; start_workflow 293 / 312."
    echo "One PostgreSQL commit (pgbench, one INSERT per transaction): p50 0.18 ms at 1."
    echo
  fi
  echo "### Durability settings"
  echo
  echo "- Ours: every journal commit is one record appended to the write-ahead log and fdatasynced,"
  echo "  shared by all requests queued at that moment (group commit on one writer thread), then"
  echo "  applied to redb; redb commits with \`Durability::Immediate\` at checkpoints. No request is"
  echo "  answered before the fdatasync of its record."
  echo "  fsync-family calls for 200 sequential echo requests: ${OURS_FSYNC:-none seen}."
  echo "- Restate ($RS_VERSION defaults, from \`restate-server --dump-config\` with this config):"
  echo "  roles: $(awk '/^roles = \[/{f=1; next} f&&/\]/{f=0} f' "$OUT/restate-effective-config.toml" | tr -d ' ",' | paste -sd, -)"
  echo "  - bifrost default-provider = $(cfg bifrost default-provider), default-replication = $(cfg '' default-replication)"
  echo "  - [log-server] rocksdb-disable-wal-fsync = $(cfg log-server rocksdb-disable-wal-fsync)"
  echo "  - [bifrost.local] rocksdb-disable-wal = $(cfg bifrost.local rocksdb-disable-wal), rocksdb-disable-wal-fsync = $(cfg bifrost.local rocksdb-disable-wal-fsync)"
  echo "  - partition store ([worker.storage]) WAL files after run 1, bytes: ${RS_DB_WAL:-none}; log-store WAL files, bytes: ${RS_LOG_WAL:-none}"
  echo "  - fsync-family calls for 200 sequential echo requests: ${RS_FSYNC:-none seen}."
  echo
  echo "Raw output: $OUT"
} | tee "$OUT/report.md"
