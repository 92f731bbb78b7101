#!/usr/bin/env bash
# Two builds of ours, one against the other: whole loadgen runs (every scenario, as
# bench/compare.sh runs our side), the builds alternating, then medians and the ratio per row.
# This is how a change is checked against "no scenario more than 10% slower than before".
#
#   bench/builds.sh [--runs N] [--seconds N] [--warmup SECS] [--only TEXT] [--out DIR]
#                   [--max-other-cpu SECS] [--tries N] BASELINE [CANDIDATE]
#
# BASELINE and CANDIDATE are git revisions of this repository (each built in release from a
# worktree under --out) or folders holding a `bench-services` binary; CANDIDATE defaults to the
# working tree. Both servers are driven by the working tree's loadgen (`--server`), each run on
# a fresh data folder with a clean environment. --runs N (default 3) rounds; odd rounds run the
# baseline first, even ones the candidate, so drift of the machine falls on both. The machine
# is noisy (±15-20% between identical runs here): decide on medians of three rounds or more.
# Rows with more than --max-other-cpu CPU s of foreign load (default: a tenth of a row) are
# run again, up to --tries attempts (default 3), as in compare.sh. Needs wrk (installed with
# apt when missing) and node (for bench/summarize.js).
set -euo pipefail
shopt -s inherit_errexit # a failure inside $(...) stops the script too

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
RUNS=3
SECS=5
WARMUP=2
ONLY=()
OUT=""
MAX_OTHER=""
TRIES=3
SIDES=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS="$2"; shift 2 ;;
    --seconds) SECS="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --only) ONLY=(--only "$2"); shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --max-other-cpu) MAX_OTHER="$2"; shift 2 ;;
    --tries) TRIES="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    -*) echo "unknown argument $1" >&2; exit 2 ;;
    *) SIDES+=("$1"); shift ;;
  esac
done
if [ "${#SIDES[@]}" -lt 1 ] || [ "${#SIDES[@]}" -gt 2 ]; then
  echo "usage: bench/builds.sh [options] BASELINE [CANDIDATE] (--help)" >&2
  exit 2
fi
OUT="${OUT:-$(mktemp -d /tmp/bench-builds.XXXXXX)}"
MAX_OTHER="${MAX_OTHER:-$(default_max_other "$SECS")}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)" # git and cd below read it from different folders
rm -f "$OUT"/side-*.tsv "$OUT"/side-*.md

if ! command -v wrk >/dev/null; then apt_install wrk; fi

# Every side names a folder or a revision, checked before anything is built.
for side in "${SIDES[@]}"; do
  [ -d "$side" ] || git -C "$ROOT" rev-parse --verify --quiet "$side^{commit}" >/dev/null ||
    { echo "$side is neither a folder nor a revision of $ROOT" >&2; exit 2; }
done
# Worktrees an interrupted run left behind.
for w in "$OUT"/src-*; do
  if [ -e "$w" ]; then git -C "$ROOT" worktree remove --force "$w" 2>/dev/null || rm -rf "$w"; fi
done
git -C "$ROOT" worktree prune

# Prints the bench-services binary of side $1 (a folder or a revision), building a revision.
# Revisions share the workspace's target folder (dependencies build once); each binary is
# copied aside at once, since the next build writes the same path, and the worktree removed.
binary_of() {
  local side=$1 sha src built=0
  if [ -d "$side" ]; then
    [ -x "$side/bench-services" ] || { echo "no bench-services in $side" >&2; exit 1; }
    echo "$(cd "$side" && pwd)/bench-services"
    return
  fi
  sha="$(git -C "$ROOT" rev-parse --short "$side^{commit}")"
  src="$OUT/src-$sha"
  mkdir -p "$OUT/bin-$sha"
  if [ ! -x "$OUT/bin-$sha/bench-services" ]; then
    log "building bench-services at $sha (release, worktree $src)"
    git -C "$ROOT" worktree add --detach --force "$src" "$sha" >/dev/null
    (cd "$src" && CARGO_TARGET_DIR="$ROOT/target" cargo build --release -p examples --bin bench-services >&2) &&
      cp "$ROOT/target/release/bench-services" "$OUT/bin-$sha/" && built=1
    git -C "$ROOT" worktree remove --force "$src"
    [ "$built" = 1 ] || { echo "building bench-services at $sha failed" >&2; exit 1; }
  fi
  echo "$OUT/bin-$sha/bench-services"
}

label_of() { # a short name for side $1
  if [ -d "$1" ]; then basename "$(cd "$1" && pwd)"; else git -C "$ROOT" rev-parse --short "$1^{commit}"; fi
}

BASE_BIN="$(binary_of "${SIDES[0]}")"
BASE_LABEL="$(label_of "${SIDES[0]}")"
log "building the working tree's loadgen and bench-services (release)"
(cd "$ROOT" && env -u CARGO_TARGET_DIR cargo build --release -p examples --bin bench-services --bin loadgen >&2)
mkdir -p "$OUT/bin-working-tree"
cp "$ROOT/target/release/bench-services" "$ROOT/target/release/loadgen" "$OUT/bin-working-tree/"
LOADGEN="$OUT/bin-working-tree/loadgen"
if [ "${#SIDES[@]}" -eq 2 ]; then
  CAND_BIN="$(binary_of "${SIDES[1]}")"
  CAND_LABEL="$(label_of "${SIDES[1]}")"
else
  CAND_BIN="$OUT/bin-working-tree/bench-services"
  CAND_LABEL="work-$(git -C "$ROOT" rev-parse --short HEAD)"
fi

run_side() { # side (base|cand), round
  local bin label
  if [ "$1" = base ]; then bin=$BASE_BIN; label=$BASE_LABEL; else bin=$CAND_BIN; label=$CAND_LABEL; fi
  log "round $2 of $RUNS: $label"
  env -i PATH="$CLEAN_PATH" HOME="$OUT" "$LOADGEN" --server "$bin" --driver wrk \
    --seconds "$SECS" --warmup "$WARMUP" --max-other-cpu "$MAX_OTHER" --tries "$TRIES" \
    "${ONLY[@]}" --label "$label" --tsv "$OUT/side-$1-$2.tsv" | tee "$OUT/side-$1-$2.md" >&2
}

for round in $(seq 1 "$RUNS"); do
  if [ $((round % 2)) -eq 1 ]; then run_side base "$round"; run_side cand "$round"
  else run_side cand "$round"; run_side base "$round"; fi
done

{
  echo
  echo "## $CAND_LABEL against $BASE_LABEL"
  echo
  echo "Machine: $(nproc) CPUs, kernel $(uname -r). wrk, $SECS s per row, warmup $WARMUP s, $RUNS alternating round(s)."
  echo
  node "$BENCH/summarize.js" "$SECS" "$(tsvs side-cand)" "$(tsvs side-base)" "$CAND_LABEL" "$BASE_LABEL"
} | tee "$OUT/summary.md"
echo >&2
echo "results in $OUT (summary.md, side-*.md)" >&2
