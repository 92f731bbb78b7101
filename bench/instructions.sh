#!/usr/bin/env bash
# Instructions per request of one scenario, for one or more builds: valgrind (cachegrind, no
# cache simulation) counts the server's user-space instructions, all threads, over a fixed
# load of N requests and again over 2N (curl, concurrency 16, fresh data folder each time); the
# difference per request leaves start-up out. Where req/s on this machine swings ±15-20%
# between identical runs, the count repeats within about 1%, so a change of a few percent shows
# in one run. It sees neither the kernel nor cache misses nor contention, and under valgrind
# SHA-256 (derived ids) runs without the CPU's SHA extensions: read it beside a req/s
# comparison (bench/builds.sh), not instead of one.
#
#   bench/instructions.sh [--requests N] [--path PATH] [--body JSON] [--idempotent] BUILD...
#
# BUILD is a folder holding a `bench-services` binary (bench/builds.sh leaves one per
# revision under its --out). Defaults: 1600 requests of `POST /Fanout/send` with body `10`;
# `--path /Noop/echo --body '{}'` counts echo; `--idempotent` gives every request its own
# `idempotency-key` header. Needs valgrind (installed with apt when missing).
set -euo pipefail
BENCH=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"

N=1600 PATH_=/Fanout/send BODY=10 PORT=9870 IDEMPOTENT=
BUILDS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --requests) N=$2; shift 2 ;;
    --path) PATH_=$2; shift 2 ;;
    --body) BODY=$2; shift 2 ;;
    --idempotent) IDEMPOTENT=1; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) BUILDS+=("$1"); shift ;;
  esac
done
[ ${#BUILDS[@]} -gt 0 ] || { echo "usage: bench/instructions.sh [--requests N] [--path PATH] [--body JSON] [--idempotent] BUILD..." >&2; exit 2; }
command -v valgrind >/dev/null || apt_install valgrind

# Instructions the server executed from start to stop with $2 requests; $1 is the build.
count() {
  local data pid per c out
  data=$(mktemp -d)
  env -i PATH="$CLEAN_PATH" RESTATE_DATA_DIR="$data" RESTATE_INGRESS_ADDR=127.0.0.1:$PORT \
    RESTATE_ADMIN_ADDR=127.0.0.1:$((PORT + 1)) valgrind --tool=cachegrind --cache-sim=no \
    --cachegrind-out-file="$data/cg.out" "$1/bench-services" >"$data/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do
    curl -sf -o /dev/null -X POST -H 'content-type: application/json' -d '{}' \
      "http://127.0.0.1:$PORT/Noop/echo" && break
    sleep 0.2
  done
  per=$(($2 / 16))
  local clients=()
  for c in $(seq 1 16); do
    (
      args=()
      for i in $(seq 1 "$per"); do
        [ "$i" -gt 1 ] && args+=(--next)
        [ -n "$IDEMPOTENT" ] && args+=(-H "idempotency-key: k-$c-$i")
        args+=(-X POST -H 'content-type: application/json' -d "$BODY" -o /dev/null -w '%{http_code}\n'
          "http://127.0.0.1:$PORT$PATH_")
      done
      curl -s "${args[@]}" | grep -vc '^2' || true
    ) >"$data/client-$c" &
    clients+=($!)
  done
  wait "${clients[@]}"
  out=$(cat "$data"/client-* | awk '{s += $1} END {print s + 0}')
  if [ "$out" != 0 ]; then
    echo "$1: $out of $2 requests to $PATH_ failed (server log: $data/server.log)" >&2
    kill "$pid"
    exit 1
  fi
  kill -INT "$pid"
  wait "$pid" || true
  awk '/^summary:/ {print $2}' "$data/cg.out"
  rm -rf "$data"
}

for build in "${BUILDS[@]}"; do
  one=$(count "$build" "$N")
  two=$(count "$build" $((2 * N)))
  echo "$build $PATH_: $(((two - one) / N)) instructions per request ($N requests: $one, $((2 * N)): $two)"
done
