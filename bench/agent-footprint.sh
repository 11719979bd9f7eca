#!/usr/bin/env bash
# bench/agent-footprint.sh — aftercare-agent's footprint beside node_exporter, collectd and
# zabbix_agent2, measured in one run on this machine (only 127.0.0.1 traffic).
#
# See usage() below, or run with --help.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: bench/agent-footprint.sh [options]

Runs aftercare-agent (sending to a local aftercare-collector over QUIC) beside
node_exporter, collectd and zabbix_agent2, all on a 10 s interval, warms up, then measures
each agent's process tree with the team kit's measure.py and prints CPU % of one core,
RSS, PSS, peak RSS and threads per agent, and aftercare's ratio to each peer.
Fails if the agent delivered nothing to the collector.

Options (each has an environment variable twin):
  -w, --window S     measurement window in seconds          WINDOW   (default 120; use >= 120 for figures you report)
      --twice        measure two windows back to back       RUNS=2   (the kit's advice for reportable figures)
      --runs N       measure N windows                      RUNS     (default 1)
      --warmup S     warm-up before the first window        WARMUP   (default 15)
      --wait-idle S  before measuring, wait up to S seconds for the machine to be idle
                     (< IDLE_PCT % busy, default 10)         WAIT_IDLE (default 0: only warn)
      --peers-only   skip building and running aftercare    PEERS_ONLY=1
      --skip-build   use already built binaries             SKIP_BUILD=1
      --keep         keep the scratch dir (configs, logs)   KEEP=1
      --json FILE    also write all results as JSON         JSON_OUT
  -h, --help

Other environment:
  SHARED=DIR         team kit (default: <repo>/../shared); peers' files in DIR/bench-peers
  AGENT_BIN, COLLECTOR_BIN   binaries to run instead of target/agent-release/aftercare-agent
                     and target/release/aftercare-collector (CARGO_TARGET_DIR is honoured)
  PYTHON             python3 to use for the kit's scripts (default /usr/bin/python3)

Installs prometheus-node-exporter, collectd-core, zabbix-agent2 and curl with apt-get if
absent (needs root). Everything it starts is stopped on exit; the scratch dir is removed
unless KEEP=1. The machine is shared: run it when it is idle, and compare the ratios of
one run rather than absolute figures across runs.
EOF
}

# ---------------------------------------------------------------------------- options
WINDOW=${WINDOW:-120}
RUNS=${RUNS:-1}
WARMUP=${WARMUP:-15}
WAIT_IDLE=${WAIT_IDLE:-0}
IDLE_PCT=${IDLE_PCT:-10}
PEERS_ONLY=${PEERS_ONLY:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP=${KEEP:-0}
JSON_OUT=${JSON_OUT:-}
INTERVAL=10 # seconds, every agent's collection interval; the kit's figures are for 10 s

die() {
  printf '\nagent-footprint: ERROR: %s\n' "$*" >&2
  exit 1
}
say() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'agent-footprint: WARNING: %s\n' "$*" >&2; }

need_arg() { if [ $# -lt 2 ] || [ -z "$2" ]; then die "option $1 needs a value (see --help)"; fi; }
while [ $# -gt 0 ]; do
  case "$1" in
    -w | --window) need_arg "$@"; WINDOW=$2; shift 2 ;;
    --twice) RUNS=2; shift ;;
    --runs) need_arg "$@"; RUNS=$2; shift 2 ;;
    --warmup) need_arg "$@"; WARMUP=$2; shift 2 ;;
    --wait-idle) need_arg "$@"; WAIT_IDLE=$2; shift 2 ;;
    --peers-only) PEERS_ONLY=1; shift ;;
    --skip-build) SKIP_BUILD=1; shift ;;
    --keep) KEEP=1; shift ;;
    --json) need_arg "$@"; JSON_OUT=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
for v in WINDOW RUNS WARMUP WAIT_IDLE IDLE_PCT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number of seconds/count, got '${!v}'"
done
[ "$WINDOW" -ge 10 ] || die "WINDOW=$WINDOW is too short: it must span at least one $INTERVAL s interval"
[ "$RUNS" -ge 1 ] || die "RUNS must be at least 1"
for v in PEERS_ONLY SKIP_BUILD KEEP; do
  [[ ${!v} =~ ^[01]$ ]] || die "$v must be 0 or 1, got '${!v}'"
done
if [ -n "$JSON_OUT" ]; then
  case "$JSON_OUT" in /*) ;; *) JSON_OUT=$PWD/$JSON_OUT ;; esac
fi

# ---------------------------------------------------------------------------- where things are
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
[ -f "$REPO/Cargo.toml" ] || die "no Cargo.toml in $REPO: the script must stay in the repo's bench/ folder"
SHARED=${SHARED:-$REPO/../shared}
PEERS=$SHARED/bench-peers
for f in measure.py collectd.conf zabbix_agent2.conf zbx_poll.py; do
  [ -f "$PEERS/$f" ] || die "team kit file $PEERS/$f is missing (set SHARED=DIR to the kit)"
done
HELPER=$HERE/footprint.py
[ -f "$HELPER" ] || die "helper $HELPER is missing"
if [ -z "${PYTHON:-}" ]; then
  if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=$(command -v python3) || die "python3 not found"; fi
fi
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
py() { "$PYTHON" "$HELPER" "$@"; }
OURS=aftercare-agent

# ---------------------------------------------------------------------------- cleanup
DIR=""
STARTED=()   # PIDs we started, each the leader of its own process group (setsid)
NAMES=()     # their names, same order
TRANSIENT="" # a foreground job we wait on interruptibly (sleep, measure.py)

# is_alive PID: running, not a zombie waiting to be reaped (kill -0 succeeds on zombies)
is_alive() {
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  s=${s##*) }
  case ${s%% *} in Z | X) return 1 ;; esac
}
# live_groups: the process groups that still hold a live (non-zombie) process
live_groups() { ps -e -o pgid=,stat= 2>/dev/null | awk '$2 !~ /^Z/ { print $1 }' | sort -u; }

stop_all() {
  local i pid alive t live
  if [ -n "$TRANSIENT" ]; then kill -TERM "$TRANSIENT" 2>/dev/null || true; fi
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
    kill -TERM -- "-${STARTED[$i]}" 2>/dev/null || kill -TERM "${STARTED[$i]}" 2>/dev/null || true
  done
  for ((t = 0; t < 50; t++)); do # up to 5 s for a clean stop
    alive=0
    live=" $(live_groups | tr '\n' ' ') "
    for pid in "${STARTED[@]}"; do [[ $live == *" $pid "* ]] && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  live=" $(live_groups | tr '\n' ' ') "
  for ((i = 0; i < ${#STARTED[@]}; i++)); do
    pid=${STARTED[$i]}
    if [[ $live == *" $pid "* ]]; then
      warn "${NAMES[$i]} (pid $pid) ignored SIGTERM; killing it"
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
  done
  for pid in "${STARTED[@]}" $TRANSIENT; do wait "$pid" 2>/dev/null || true; done
  STARTED=() NAMES=() TRANSIENT=""
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  set +e
  if [ ${#STARTED[@]} -gt 0 ] || [ -n "$TRANSIENT" ]; then
    say "stopping everything this run started"
    stop_all
  fi
  if [ -n "$DIR" ] && [ -d "$DIR" ]; then
    if [ "$KEEP" = 1 ]; then
      say "kept the scratch dir (configs, logs, results): $DIR"
    else
      rm -rf -- "$DIR"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# wait_for OUT ERR CMD...: run a long wait (an external command, not a function, so that
# its PID is the one we kill) in the background, so that a signal reaches our
# traps at once; its output goes to files OUT and ERR (ERR "-": our stderr). Never redirect
# this function itself: the traps would run with that redirection, losing cleanup's messages.
wait_for() {
  local out=$1 err=$2
  shift 2
  if [ "$err" = - ]; then "$@" >"$out" & else "$@" >"$out" 2>"$err" & fi
  TRANSIENT=$!
  local rc=0
  wait "$TRANSIENT" || rc=$?
  TRANSIENT=""
  return "$rc"
}

log_tail() { # NAME: last lines of a process' log, for error messages
  local f=$DIR/logs/$1.log
  if [ -s "$f" ]; then
    printf -- '---- last lines of %s\n' "$f" >&2
    tail -n 15 "$f" >&2
    printf -- '----\n' >&2
  fi
}

# start NAME EXE ARGS...: run EXE in its own session (so its whole process group can be
# stopped), log to DIR/logs/NAME.log, remember its PID (= the exec'd EXE, see check_exe)
start() {
  local name=$1
  shift
  setsid "$@" >"$DIR/logs/$name.log" 2>&1 </dev/null &
  STARTED+=("$!")
  NAMES+=("$name")
  eval "PID_${name//[^a-zA-Z0-9]/_}=$!"
}
pid_of() { local v="PID_${1//[^a-zA-Z0-9]/_}"; printf '%s' "${!v}"; }

# check_exe NAME EXE: the PID we keep must be EXE itself (what measure.py should measure)
check_exe() {
  local name=$1 want pid exe t
  want=$(readlink -f "$2")
  pid=$(pid_of "$name")
  for ((t = 0; t < 50; t++)); do
    exe=$(readlink -f "/proc/$pid/exe" 2>/dev/null || true)
    [ "$exe" = "$want" ] && return 0
    is_alive "$pid" || break
    sleep 0.1
  done
  log_tail "$name"
  if is_alive "$pid"; then
    die "$name: pid $pid runs '$exe', not $want"
  fi
  die "$name exited right after start (see its log above)"
}

# wait_listen NAME tcp|udp PORT: wait until the process listens, or fail with its log
wait_listen() {
  local name=$1 kind=$2 port=$3 pid t
  pid=$(pid_of "$name")
  for ((t = 0; t < 150; t++)); do
    py listening "$kind" "$port" && return 0
    is_alive "$pid" || { log_tail "$name"; die "$name exited before listening on $kind 127.0.0.1:$port"; }
    sleep 0.1
  done
  log_tail "$name"
  die "$name does not listen on $kind 127.0.0.1:$port after 15 s"
}

alive_or_die() { # NAME...: every one still running?
  local n pid
  for n in "$@"; do
    pid=$(pid_of "$n")
    is_alive "$pid" || { log_tail "$n"; die "$n (pid $pid) died during the run; its figures would be worthless"; }
  done
}

# run_logged NAME CMD...: a one-shot command, output to DIR/logs/NAME.log, loud on failure
run_logged() {
  local name=$1
  shift
  if ! "$@" >"$DIR/logs/$name.log" 2>&1; then
    log_tail "$name"
    die "'$*' failed"
  fi
}

# ---------------------------------------------------------------------------- 1. peers installed?
NODE_EXPORTER=$(command -v prometheus-node-exporter || true)
COLLECTD=$(command -v collectd || true)
ZABBIX=$(command -v zabbix_agent2 || true)
if [ -z "$NODE_EXPORTER" ] || [ -z "$COLLECTD" ] || [ -z "$ZABBIX" ] || ! command -v curl >/dev/null; then
  PKGS=(prometheus-node-exporter collectd-core zabbix-agent2 curl)
  [ "$(id -u)" = 0 ] || die "peers missing; as root run: apt-get install -y ${PKGS[*]}"
  command -v apt-get >/dev/null || die "peers missing and there is no apt-get; install: ${PKGS[*]}"
  export DEBIAN_FRONTEND=noninteractive
  updated=0
  if ! apt-cache show "${PKGS[@]}" >/dev/null 2>&1; then
    say "apt-get update (package lists do not know the peers yet)"
    apt-get update -q >&2 || die "apt-get update failed"
    updated=1
  fi
  say "installing the peers: ${PKGS[*]}"
  if ! apt-get install -y -q "${PKGS[@]}" >&2; then
    [ "$updated" = 0 ] || die "apt-get install ${PKGS[*]} failed"
    say "install failed; apt-get update (stale package lists?) and retrying once"
    apt-get update -q >&2 || die "apt-get update failed"
    apt-get install -y -q "${PKGS[@]}" >&2 || die "apt-get install ${PKGS[*]} failed"
  fi
  NODE_EXPORTER=$(command -v prometheus-node-exporter) || die "prometheus-node-exporter not found after install"
  COLLECTD=$(command -v collectd) || die "collectd not found after install"
  ZABBIX=$(command -v zabbix_agent2) || die "zabbix_agent2 not found after install"
fi
for n in prometheus-node node_exporter collectd zabbix_agent2; do # names as /proc/PID/comm has them
  if pgrep -x "$n" >/dev/null 2>&1; then
    warn "a '$n' not started by this script is running (pid $(pgrep -x "$n" | tr '\n' ' ')); it adds load but is not measured"
  fi
done

# ---------------------------------------------------------------------------- 2. our binaries
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
case "$TARGET" in /*) ;; *) TARGET=$REPO/$TARGET ;; esac
AGENT_BIN=${AGENT_BIN:-$TARGET/agent-release/aftercare-agent}
COLLECTOR_BIN=${COLLECTOR_BIN:-$TARGET/release/aftercare-collector}
if [ "$PEERS_ONLY" = 1 ]; then
  say "PEERS_ONLY=1: aftercare is neither built nor measured"
else
  if [ "$SKIP_BUILD" = 1 ]; then
    say "SKIP_BUILD=1: using $AGENT_BIN and $COLLECTOR_BIN as they are"
  else
    command -v cargo >/dev/null || die "cargo not found (or use SKIP_BUILD=1 with AGENT_BIN/COLLECTOR_BIN)"
    say "building aftercare-agent (profile agent-release, the one that ships)"
    (cd "$REPO" && cargo build --profile agent-release -p aftercare-agent) || die "building aftercare-agent failed"
    say "building aftercare-collector (release)"
    (cd "$REPO" && cargo build --release -p aftercare-collector) || die "building aftercare-collector failed"
  fi
  [ -x "$AGENT_BIN" ] || die "no agent binary at $AGENT_BIN"
  [ -x "$COLLECTOR_BIN" ] || die "no collector binary at $COLLECTOR_BIN"
fi

# ---------------------------------------------------------------------------- 3. scratch dir, our pair
DIR=$(mktemp -d "${TMPDIR:-/tmp}/agent-footprint.XXXXXX") || die "mktemp failed"
mkdir -p "$DIR/logs" "$DIR/pids" "$DIR/results"
say "scratch dir: $DIR"
HOST=$(hostname 2>/dev/null || cat /proc/sys/kernel/hostname)
# the kit's ports (9100, 10050) when they are free; zabbix_agent2 takes none above 32767
ports=$(py freeport tcp@9100 tcp@10050 udp) || die "could not pick free ports on 127.0.0.1"
read -r NE_PORT ZBX_PORT QUIC_PORT <<<"$ports"

if [ "$PEERS_ONLY" = 0 ]; then
  CC=(--config "$DIR/collector.toml")
  cat >"$DIR/collector.toml" <<EOF
data_dir = "$DIR/collector"
listen = "127.0.0.1:$QUIC_PORT"
EOF
  run_logged collector-ca-init "$COLLECTOR_BIN" "${CC[@]}" ca init
  run_logged collector-cert-issue "$COLLECTOR_BIN" "${CC[@]}" cert issue --customer bench --host "$HOST" --out "$DIR/agent-cert"
  for f in agent.crt agent.key ca.crt; do
    [ -s "$DIR/agent-cert/$f" ] || die "cert issue did not write $DIR/agent-cert/$f"
  done
  mkdir -p "$DIR/agent-state"
  cat >"$DIR/agent.toml" <<EOF
state_dir = "$DIR/agent-state"
interval = "${INTERVAL}s"

[collector]
address = "127.0.0.1:$QUIC_PORT"
server_name = "localhost"
ca = "$DIR/agent-cert/ca.crt"
cert = "$DIR/agent-cert/agent.crt"
key = "$DIR/agent-cert/agent.key"
EOF
  run_logged agent-consent "$AGENT_BIN" --config "$DIR/agent.toml" consent grant --scope metrics --by bench
  # what `hosts` says before the agent ever ran: evidence of delivery must differ from this
  "$COLLECTOR_BIN" "${CC[@]}" hosts >"$DIR/results/hosts-before.txt" 2>&1 || true

  say "starting aftercare-collector on udp 127.0.0.1:$QUIC_PORT"
  start aftercare-collector "$COLLECTOR_BIN" "${CC[@]}" serve
  check_exe aftercare-collector "$COLLECTOR_BIN"
  wait_listen aftercare-collector udp "$QUIC_PORT"
  say "starting aftercare-agent"
  start "$OURS" "$AGENT_BIN" --config "$DIR/agent.toml" run
  check_exe "$OURS" "$AGENT_BIN"
  pid_of "$OURS" >"$DIR/pids/$OURS"
fi

# ---------------------------------------------------------------------------- 4. the peers
# the kit's files with @DIR@ (and the ports) filled in
sub() { sed -e "s|@DIR@|$DIR|g" "$PEERS/$1" >"$DIR/$1"; }
sub collectd.conf
sub zabbix_agent2.conf
sub zbx_poll.py
cp "$PEERS/measure.py" "$DIR/measure.py"
sed -i -e "s/^ListenPort=10050$/ListenPort=$ZBX_PORT/" "$DIR/zabbix_agent2.conf"
sed -i -e "s/port=10050)/port=$ZBX_PORT)/" "$DIR/zbx_poll.py"
grep -q "^ListenPort=$ZBX_PORT\$" "$DIR/zabbix_agent2.conf" || die "could not set ListenPort in the kit's zabbix_agent2.conf (has it changed?)"
grep -q "port=$ZBX_PORT)" "$DIR/zbx_poll.py" || die "could not set the port in the kit's zbx_poll.py (has it changed?)"
! grep -q '@DIR@' "$DIR"/collectd.conf "$DIR"/zabbix_agent2.conf || die "unsubstituted @DIR@ left in a peer config"
mkdir -p "$DIR/collectd" "$DIR/csv" "$DIR/zabbix" "$DIR/node_exporter"

say "starting node_exporter on tcp 127.0.0.1:$NE_PORT, scraped every ${INTERVAL}s"
start node_exporter "$NODE_EXPORTER" --web.listen-address="127.0.0.1:$NE_PORT" --collector.disable-defaults \
  --collector.cpu --collector.meminfo --collector.loadavg --collector.filesystem --collector.diskstats --collector.netdev
check_exe node_exporter "$NODE_EXPORTER"
wait_listen node_exporter tcp "$NE_PORT"
# the scraper is not measured (like our collector, it is the other side of the wire)
# shellcheck disable=SC2016 # the loop's $1.. are its own arguments
start node_exporter-scraper bash -c '
  while :; do
    t0=$(date +%s%N)
    curl -sS -o "$2.tmp" -w "%{http_code} %{size_download}\n" --max-time 5 "$1" >>"$3" 2>&1 && mv -f "$2.tmp" "$2"
    t1=$(date +%s%N)
    sleep "$(awk -v d=$(((t1 - t0) / 1000000)) -v i="$4" "BEGIN { s = i - d / 1000; print (s > 0 ? s : 0) }")"
  done' scrape "http://127.0.0.1:$NE_PORT/metrics" "$DIR/node_exporter/last.prom" "$DIR/node_exporter/scrapes.log" "$INTERVAL"
pid_of node_exporter >"$DIR/pids/node_exporter"

say "starting collectd (Interval $INTERVAL)"
start collectd "$COLLECTD" -f -C "$DIR/collectd.conf"
check_exe collectd "$COLLECTD"
pid_of collectd >"$DIR/pids/collectd"

say "starting zabbix_agent2 on tcp 127.0.0.1:$ZBX_PORT, polled every ${INTERVAL}s"
start zabbix_agent2 "$ZABBIX" -f -c "$DIR/zabbix_agent2.conf"
check_exe zabbix_agent2 "$ZABBIX"
wait_listen zabbix_agent2 tcp "$ZBX_PORT"
"$PYTHON" "$DIR/zbx_poll.py" once >"$DIR/zabbix/poll-once.txt" 2>&1 || { cat "$DIR/zabbix/poll-once.txt" >&2; die "zbx_poll.py once failed"; }
zbx_items=$(wc -l <"$DIR/zabbix/poll-once.txt")
zbx_bad=$(grep -cE ' = (ERR |BAD:|ZBX_NOTSUPPORTED)' "$DIR/zabbix/poll-once.txt" || true)
[ "$zbx_bad" -lt "$zbx_items" ] || { cat "$DIR/zabbix/poll-once.txt" >&2; die "zabbix_agent2 answered none of the poller's items"; }
[ "$zbx_bad" = 0 ] || warn "zabbix_agent2 could not answer $zbx_bad of $zbx_items items (device names of the kit's poller differ on this machine?)"
start zbx_poll "$PYTHON" "$DIR/zbx_poll.py"
pid_of zabbix_agent2 >"$DIR/pids/zabbix_agent2"

# ---------------------------------------------------------------------------- 5. warm up, measure
MEASURED=(node_exporter collectd zabbix_agent2)
[ "$PEERS_ONLY" = 1 ] || MEASURED=("$OURS" "${MEASURED[@]}")
say "warming up ${WARMUP}s"
wait_for "$DIR/results/busy" - "$PYTHON" "$HELPER" busy "$WARMUP"
warm_busy=$(cat "$DIR/results/busy")
alive_or_die "${MEASURED[@]}"
[ "$PEERS_ONLY" = 1 ] || alive_or_die aftercare-collector
if [ "$WAIT_IDLE" -gt 0 ]; then
  waited=0
  while awk -v b="$warm_busy" -v m="$IDLE_PCT" 'BEGIN { exit !(b >= m) }' && [ "$waited" -lt "$WAIT_IDLE" ]; do
    say "machine ${warm_busy}% busy (>= ${IDLE_PCT}%); waiting for it to be idle ($waited/${WAIT_IDLE}s)"
    wait_for "$DIR/results/busy" - "$PYTHON" "$HELPER" busy 10
    warm_busy=$(cat "$DIR/results/busy")
    waited=$((waited + 10))
  done
fi
if awk -v b="$warm_busy" -v m="$IDLE_PCT" 'BEGIN { exit !(b >= m) }'; then
  warn "the machine was ${warm_busy}% busy just before measuring (others compiling?): ratios stay comparable, absolute CPU figures less so"
fi
[ "$WINDOW" -ge 120 ] || warn "window ${WINDOW}s < 120 s: a smoke test, not figures to report"

# collector_records FILE: how many records `metrics --host HOST --json` returns (-1: no answer)
collector_records() {
  local n=-1
  if "$COLLECTOR_BIN" "${CC[@]}" metrics --host "$HOST" --json >"$1" 2>"$1.err"; then
    n=$(py count-json "$1") || n=-1
  fi
  printf '%s' "${n:--1}"
}
if [ "$PEERS_ONLY" = 0 ]; then
  m_warm=$(collector_records "$DIR/results/metrics-warm.json")
  say "records at the collector after the warm-up: $m_warm"
fi

for ((i = 1; i <= RUNS; i++)); do
  say "measuring window $i of $RUNS (${WINDOW}s): ${MEASURED[*]}"
  w=$(printf '%s/results/window%03d' "$DIR" "$i")
  wait_for "$w.json" "$w.err" env PIDDIR="$DIR/pids" "$PYTHON" "$DIR/measure.py" "$WINDOW" "window $i" || {
    cat "$w.err" >&2
    die "measure.py failed in window $i"
  }
  grep '^# machine busy' "$w.err" >&2 || true
  alive_or_die "${MEASURED[@]}"
done

# ---------------------------------------------------------------------------- did every agent work?
ne_ok=$(grep -c '^200 ' "$DIR/node_exporter/scrapes.log" || true)
ne_all=$(wc -l <"$DIR/node_exporter/scrapes.log")
ne_series=0
[ ! -f "$DIR/node_exporter/last.prom" ] || ne_series=$(grep -c '^node_' "$DIR/node_exporter/last.prom" || true)
if [ "${ne_ok:-0}" = 0 ] || [ "${ne_series:-0}" = 0 ]; then
  cat "$DIR/node_exporter/scrapes.log" >&2
  die "node_exporter was never scraped successfully"
fi
cd_files=$(find "$DIR/csv" -type f | wc -l)
[ "$cd_files" -gt 0 ] || { log_tail collectd; die "collectd wrote no csv files"; }

DELIVERY=""
if [ "$PEERS_ONLY" = 0 ]; then
  CO=$DIR/results
  h_rc=0
  "$COLLECTOR_BIN" "${CC[@]}" hosts >"$CO/hosts.txt" 2>&1 || h_rc=$?
  m_end=$(collector_records "$CO/metrics.json")
  if [ "$m_end" -gt 0 ]; then
    DELIVERY="yes: 'aftercare-collector metrics --host $HOST --json' returns $m_end records ($m_warm after the warm-up)"
    [ "$m_end" -gt "$m_warm" ] || warn "no new records arrived during the measured window(s) ($m_warm -> $m_end)"
  elif [ "$h_rc" = 0 ] && grep -qF -- "$HOST" "$CO/hosts.txt" && ! cmp -s "$CO/hosts.txt" "$CO/hosts-before.txt"; then
    DELIVERY="probably: '$HOST' is listed by 'aftercare-collector hosts' and the listing changed since before the agent ran; 'metrics --host $HOST --json' gave no records (see $CO/metrics.json.err)"
  fi
fi

# ---------------------------------------------------------------------------- report
human() { awk -v b="$1" 'BEGIN { printf "%d B (%.2f MiB)", b, b / 1048576 }'; }
{
  echo
  echo "# aftercare agent footprint — $(date -u +%Y-%m-%dT%H:%M:%SZ), host $HOST, $(nproc) cores, $(uname -r)"
  echo "repo $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet HEAD 2>/dev/null || echo ' (uncommitted changes)'),"\
    "interval ${INTERVAL}s, warm-up ${WARMUP}s (machine ${warm_busy}% busy), $RUNS window(s) of ${WINDOW}s"
  echo "node_exporter $("$NODE_EXPORTER" --version 2>&1 | head -n1 | awk '{print $3}'): $ne_ok/$ne_all scrapes OK, $ne_series node_* series;" \
    "collectd: $cd_files csv files; zabbix_agent2: $((zbx_items - zbx_bad))/$zbx_items items answered"
  if [ "$PEERS_ONLY" = 0 ]; then
    echo "aftercare-agent binary: $(human "$(stat -c %s "$AGENT_BIN")") ($AGENT_BIN)"
    if [ -n "$DELIVERY" ]; then
      echo "aftercare-agent delivered data: $DELIVERY"
    else
      echo "INVALID RUN: aftercare-agent delivered NOTHING to the collector; do not report these figures"
    fi
  fi
  echo "peer binaries: node_exporter $(human "$(stat -L -c %s "$NODE_EXPORTER")"), collectd $(human "$(stat -L -c %s "$COLLECTD")")" \
    "+ plugins, zabbix_agent2 $(human "$(stat -L -c %s "$ZABBIX")")"
  py report "$OURS" "$DIR"/results/window*.json
} | tee "$DIR/results/report.txt"

if [ -n "$JSON_OUT" ]; then
  cat "$DIR"/results/window*.json >"$JSON_OUT" || die "could not write $JSON_OUT"
  say "JSON lines (one per window) written to $JSON_OUT"
fi

if [ "$PEERS_ONLY" = 0 ]; then
  echo
  echo "## what the collector received"
  echo "\$ aftercare-collector hosts"
  cat "$DIR/results/hosts.txt"
  if [ -z "$DELIVERY" ]; then
    {
      echo
      echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
      echo "!! INVALID RUN: the collector holds no data from aftercare-agent."
      echo "!! A benchmark of an agent that sends nothing is worthless; the figures above"
      echo "!! must not be reported."
      echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
      echo "\$ aftercare-collector metrics --host $HOST --json"
      head -c 2000 "$DIR/results/metrics.json"
      head -n 20 "$DIR/results/metrics.json.err"
    } >&2
    log_tail "$OURS"
    log_tail aftercare-collector
    die "aftercare-agent delivered nothing to the collector"
  fi
  echo "delivered: $DELIVERY"
fi
say "done"
