# What bench/compare.sh and bench/builds.sh share; sourced, not run.

# The PATH of every process a benchmark starts with a clean environment (`env -i`).
CLEAN_PATH=/usr/local/bin:/usr/bin:/bin

log() { printf '\n== %s\n' "$*" >&2; }

# Installs Debian package $1 with apt (refreshing the package lists only when needed).
apt_install() {
  log "installing $1 (apt)"
  apt-get install -y "$1" >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y "$1" >/dev/null; }
}

# A row's foreign CPU seconds above which it is run again, unless given: a tenth of a row of
# $1 seconds.
default_max_other() { awk -v s="$1" 'BEGIN{print s/10}'; }

# The comma-separated loadgen --tsv files $OUT/$1-1.tsv ... $OUT/$1-$RUNS.tsv, as
# bench/summarize.js takes them.
tsvs() { local f=() i; for i in $(seq 1 "$RUNS"); do f+=("$OUT/$1-$i.tsv"); done; (IFS=,; echo "${f[*]}"); }
