#!/usr/bin/env bash
# The e-commerce pipeline, measured stage by stage and end to end with release binaries, all on
# this machine (generator, ingest API, tansu, the job and PostgreSQL share its cores).
#
# Usage: benches/ecommerce.sh [-m MINUTES] [-r RATE] [-p P] [-l SECONDS]
#   -m  minutes of event time in the data set (default 20: with -r 2000, 2.4 million events)
#   -r  shop events per second of event time for the data set (default 2000)
#   -p  parallelism of the job (default 2)
#   -l  seconds of each paced latency run (default 130, so two minutes close; 0 skips it)
#
# Stages (events/s = shop events, malformed included, per second of wall time; ev_per_cpu_s per
# CPU-second of the whole machine):
#   generate   eddy gen to files (the generator alone)
#   ingest     eddy gen --fast to the ingest API of eddy serve into tansu (4 requests in flight)
#   replay     eddy run of the job over the files into PostgreSQL (no Kafka)
#   backfill   eddy run of the job over the loaded topics into PostgreSQL (end_when_idle)
# Latency: eddy gen paced at -r in real time through the ingest API while the job runs with
# checkpoints every 1 s and every 200 ms; every 100 ms the script reads how far behind the wall
# clock the newest committed click is (now - max(ts) of fact_clicks): the time from an event's
# arrival to its effect in the warehouse, plus the generator's own up-to-2-s disorder. A dashboard
# (eddy serve --warehouse) runs beside it; a listener on its event stream notes when each minute
# of activity first shows: how long after the minute ended (wall clock) the page shows it.
set -euo pipefail
minutes=20; rate=2000; parallelism=2; latency_s=130
while getopts "m:r:p:l:" opt; do
  case $opt in
    m) minutes=$OPTARG ;; r) rate=$OPTARG ;; p) parallelism=$OPTARG ;; l) latency_s=$OPTARG ;;
    *) sed -n '2,22p' "$0" >&2; exit 2 ;;
  esac
done
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/eddy/target}
(cd "$here" && cargo build --release -q -p eddy)
eddy=$CARGO_TARGET_DIR/release/eddy
tansu=${EDDY_TANSU:-$(command -v tansu || echo "$HOME/.cache/eddy/tools/bin/tansu")}
[ -x "$tansu" ] || { echo "tansu not found: cargo install tansu --locked --no-default-features --features dynostore" >&2; exit 1; }
work=$(mktemp -d /tmp/eddy-shop-bench-XXXXXX)
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" -eq 0 ] && chown postgres: "$work"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pg_port=$(free_port); kafka_port=$(free_port); http_port=$(free_port)
as_pg "$bin/initdb" -D "$work/pg" -U eddy --auth=trust -E UTF8 >/dev/null
as_pg "$bin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w \
  -o "-p $pg_port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$work -c max_connections=200" start >/dev/null
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  as_pg "$bin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
pg="postgresql://eddy@127.0.0.1:$pg_port"
fresh_db() { command psql -q -X "$pg/postgres" -c "CREATE DATABASE $1"; "$eddy" warehouse migrate --url "$pg/$1" >/dev/null; echo "$pg/$1"; }
q() { command psql -q -X -t -A "$1" -c "$2"; }
now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc; }
# CPU-seconds the whole machine has spent busy (all processes, from /proc/stat).
busy() { awk -v hz="$(getconf CLK_TCK)" '/^cpu /{print ($2+$3+$4+$7+$8)/hz}' /proc/stat; }
# Runs a command (stdout discarded, stderr in $work/stderr); sets wall_s, cpu_s (the command's own CPU-seconds) and
# other_s (what the rest of the machine used meanwhile: the server, the broker, PostgreSQL).
measure() {
  local b0 t0; b0=$(busy); t0=$(now)
  cpu_s=$(python3 -c 'import resource, subprocess, sys
subprocess.run(sys.argv[2:], check=True, stdout=subprocess.DEVNULL, stderr=open(sys.argv[1], "w"))
r = resource.getrusage(resource.RUSAGE_CHILDREN); print(r.ru_utime + r.ru_stime)' "$work/stderr" "$@")
  wall_s=$(elapsed "$t0"); other_s=$(echo "$(busy) - $b0 - $cpu_s" | bc)
}
rows=()
row() { rows+=("$1:$wall_s:$cpu_s:$other_s"); }
gen_args=(--seed 11 --rate "$rate" --users 200000 --products 20000)
start_kafka() {
  "$tansu" broker --listener-url "tcp://127.0.0.1:$kafka_port" --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
    --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
  pids+=($!); sleep 1
  rm -f "$work/keys.toml"
  EDDY_INGEST_KEY=$("$eddy" api-key create --file "$work/keys.toml" --name bench --rate unlimited)
  export EDDY_INGEST_KEY
  "$eddy" serve --listen "127.0.0.1:$http_port" --kafka "127.0.0.1:$kafka_port" --partitions "$parallelism" \
    --api-keys "$work/keys.toml" >"$work/serve.log" 2>&1 &
  pids+=($!); sleep 2
}
job=(run "$here/jobs/ecommerce/analytics.toml" --parallelism "$parallelism" --dead-letter "$work/dl.jsonl")
echo "# $(date -u +%FT%TZ) eddy $(git -C "$here" rev-parse --short HEAD) on $(nproc) cores; ${minutes} min at ${rate} events/s, p=$parallelism"

measure "$eddy" gen ecommerce "${gen_args[@]}" --start 2026-01-01T00:00:00Z --duration "${minutes}min" \
  --to "file:$work/history" --expected "$work/expected.json"
row generate
events=$(grep -o '^[0-9]*' "$work/stderr")

db=$(fresh_db replay)
measure "$eddy" "${job[@]}" --topics-from "$work/history" --param "warehouse=$db"
row replay

start_kafka
measure "$eddy" gen ecommerce "${gen_args[@]}" --start 2026-01-01T00:00:00Z --duration "${minutes}min" \
  --to "http://127.0.0.1:$http_port" --fast --in-flight 4
row ingest

db=$(fresh_db backfill)
measure "$eddy" "${job[@]}" --param "brokers=127.0.0.1:$kafka_port" --param "warehouse=$db" \
  --param end_when_idle=2s --checkpoint-dir "$work/ckpt-backfill" --checkpoint-interval 1s
wall_s=$(echo "$wall_s - 2" | bc)
row backfill
clicks=$(q "$db" "SELECT count(*) FROM fact_clicks")

# cpu_s: the stage's own process (eddy gen, or the job); other_s: everything else meanwhile.
printf "%-9s %8s %12s %12s %8s %8s %10s\n" stage wall_s events_per_s per_core cpu_s other_s ev_per_cpu_s
for r in "${rows[@]}"; do
  IFS=: read -r name secs cpu other <<<"$r"
  printf "%-9s %8.2f %12.0f %12.0f %8.1f %8.1f %10.0f\n" "$name" "$secs" "$(echo "$events / $secs" | bc -l)" \
    "$(echo "$events / $secs / $(nproc)" | bc -l)" "$cpu" "$other" "$(echo "$events / ($cpu + $other)" | bc -l)"
done
echo "# $events events; backfill wrote $clicks clicks (the ground truth says $(python3 -c "import json; print(json.load(open('$work/expected.json'))['totals']['clicks'])"))"

[ "$latency_s" -gt 0 ] || exit 0
for interval in 1s 200ms; do
  db=$(fresh_db "live_${interval/ms/}")
  "$eddy" "${job[@]}" --param "brokers=127.0.0.1:$kafka_port" --param start=latest --param "warehouse=$db" \
    --checkpoint-dir "$work/ckpt-live-$interval" --checkpoint-interval "$interval" 2>/dev/null &
  job_pid=$!; pids+=($job_pid)
  dash_port=$(free_port)
  "$eddy" serve --listen "127.0.0.1:$dash_port" --warehouse "$db" >"$work/dash-$interval.log" 2>&1 &
  dash_pid=$!; pids+=($dash_pid)
  sleep 3
  python3 -u - "http://127.0.0.1:$dash_port/api/v1/dashboard/stream" >"$work/dash-$interval.lag" <<'PY' &
import json, sys, time, urllib.request
from datetime import datetime, timezone
seen = set()
with urllib.request.urlopen(sys.argv[1]) as stream:
    for line in stream:
        if not line.startswith(b"data:"):
            continue
        a = json.loads(line[5:]).get("activity")
        if a and a["window_start"] not in seen:
            seen.add(a["window_start"])
            start = datetime.strptime(a["window_start"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
            print(f"{time.time() - start.timestamp() - 60:.3f}")
PY
  sse_pid=$!; pids+=($sse_pid)
  "$eddy" gen ecommerce "${gen_args[@]}" --start now --duration "$((latency_s + 5))s" \
    --to "http://127.0.0.1:$http_port" --batch 200 2>/dev/null &
  gen_pid=$!; pids+=($gen_pid)
  samples=()
  sleep 5
  end=$(echo "$(now) + $latency_s" | bc)
  while (( $(echo "$(now) < $end" | bc) )); do
    lag=$(q "$db" "SELECT extract(epoch FROM (now() AT TIME ZONE 'utc') - max(ts)) FROM fact_clicks" 2>/dev/null || true)
    [ -n "$lag" ] && samples+=("$lag")
    sleep 0.1
  done
  kill "$job_pid" "$gen_pid" "$dash_pid" "$sse_pid" 2>/dev/null || true
  printf '%s\n' "${samples[@]}" | sort -n | awk -v iv="$interval" '{a[NR]=$1} END {
    if (NR == 0) { print "latency (checkpoints " iv "): no samples"; exit }
    printf "latency to the warehouse, checkpoints every %s: p50 %.3f s, p99 %.3f s (%d samples)\n", iv, a[int(NR*0.5)+1], a[int(NR*0.99)+1], NR }'
  # The first minute is partial (the job started within it); the rest closed while it ran.
  tail -n +2 "$work/dash-$interval.lag" | tr '\n' ' ' | sed "s/^/dashboard shows a minute this many s after it ended (checkpoints every $interval): /"; echo
done
