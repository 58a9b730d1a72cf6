#!/usr/bin/env bash
# The cluster against the single process, and how long failures interrupt a job, measured with
# the release `eddy` binary on loopback.
#
# Usage: benches/cluster.sh [-e EVENTS] [-r RUNS] [-f | -t] [QUERY...]   (default q5 q8; -f: failures
# only; -t: throughput only)
#
# Throughput: each query runs at parallelism 2 on the Nexmark generator (EVENTS events, default
# 5M), without checkpoints, interleaved RUNS times (default 3):
#   run      `eddy run` (one process, tasks on threads, channels in memory): the baseline
#   cluster  3 coordinator and 2 worker processes (`eddy coordinator`, `eddy worker`, slots 1
#            each, so every task has a partner on the other worker): records cross gRPC, with
#            mutual TLS (TLS=0 in the environment: --insecure, to measure what TLS costs)
# and prints median wall times, the ratio cluster/run (1.10 = 10 % slower) and the bytes per
# second the exchange carried (from the workers' /metrics). Cluster times run from `eddy
# submit` to `eddy status --wait` seeing the job finished (status polls every 200 ms).
#
# Failures (q5 paced at 200k events/s, checkpoints every 200 ms, worker timeout 1 s):
#   leader   SIGKILL the Raft leader; "answer" is the time until `eddy list` names a new
#            leader, "checkpoint" the time until the job completes a checkpoint again
#   worker   SIGKILL a worker; "checkpoint" is the time until the job, restarted on the
#            remaining worker from its last checkpoint, completes a new one
set -euo pipefail
events=5000000; runs=3; throughput=1; failures=1
while getopts "e:r:ft" opt; do
  case $opt in
    e) events=$OPTARG ;; r) runs=$OPTARG ;; f) throughput=0 ;; t) failures=0 ;;
    *) sed -n '2,23p' "$0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
queries=${*:-q5 q8}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/eddy/target}
(cd "$here" && cargo build --release -q -p eddy)
eddy=$CARGO_TARGET_DIR/release/eddy
work=$(mktemp -d /tmp/eddy-cluster-bench-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
now() { date +%s.%N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
export RUST_LOG=error

# Starts 3 coordinators and 2 workers in $work/$1; sets coord_pids, worker_pids, EDDY_COORDINATORS
# and worker_metrics.
start_cluster() {
  local dir=$work/$1 timeout=${2:-3s} peers="" addrs="" id port
  mkdir -p "$dir"
  coord_pids=(); worker_pids=(); worker_metrics=()
  for id in 1 2 3; do
    port=$(free_port)
    peers+="${peers:+,}$id=127.0.0.1:$port"; addrs+="${addrs:+,}127.0.0.1:$port"
  done
  # Mutual TLS as clusters run by default; TLS=0 runs them with --insecure (to measure its cost).
  local sec_c=() sec_w=()
  if [ "${TLS:-1}" = 1 ]; then
    "$eddy" certs init "$dir/certs" --workers 2 >/dev/null 2>&1
    export EDDY_TLS_DIR=$dir/certs/client
  else
    unset EDDY_TLS_DIR
  fi
  for id in 1 2 3; do
    if [ "${TLS:-1}" = 1 ]; then sec_c=(--tls-dir "$dir/certs/coordinator-$id"); else sec_c=(--insecure); fi
    "$eddy" coordinator --id "$id" --listen "$(echo "$addrs" | cut -d, -f"$id")" --peers "$peers" \
      --worker-timeout "$timeout" --data-dir "$dir/c$id" "${sec_c[@]}" --allow-path "$work" 2>>"$dir/log" &
    coord_pids+=($!); pids+=($!)
  done
  export EDDY_COORDINATORS=$addrs
  if [ "${TLS:-1}" = 1 ]; then
    EDDY_TOKEN=$("$eddy" token bootstrap --timeout 30s); export EDDY_TOKEN
  else
    unset EDDY_TOKEN
  fi
  for w in 1 2; do
    port=$(free_port)
    if [ "${TLS:-1}" = 1 ]; then sec_w=(--tls-dir "$dir/certs/worker-$w"); else sec_w=(--insecure); fi
    "$eddy" worker --listen 127.0.0.1:0 --slots "${slots:-1}" --heartbeat 200ms \
      --metrics "127.0.0.1:$port" --data-dir "$dir/w$w" "${sec_w[@]}" 2>>"$dir/log" &
    worker_pids+=($!); pids+=($!); worker_metrics+=("127.0.0.1:$port")
  done
  until [ "$("$eddy" workers --timeout 2s 2>/dev/null | wc -l)" = 2 ]; do sleep 0.1; done
}

stop_cluster() {
  for p in "${coord_pids[@]}" "${worker_pids[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}

exchange_bytes() {
  local total=0 m
  for m in "${worker_metrics[@]}"; do
    total=$(curl -s "http://$m/metrics" | awk -v t="$total" '/^eddy_exchange_sent_bytes_total\{/ {t += $NF} END {printf "%.0f", t}')
  done
  echo "$total"
}

[ "$throughput" = 1 ] && echo "== throughput: $events generated events, parallelism 2, median of $runs" &&
printf "%-6s %10s %10s %8s %14s\n" query run_s cluster_s ratio exchange_MB/s
[ "$throughput" = 1 ] && for q in $queries; do
  : >"$work/$q.run"; : >"$work/$q.cluster"; : >"$work/$q.rate"
  for r in $(seq "$runs"); do
    t0=$(now)
    "$eddy" run "$here/jobs/nexmark/$q.toml" --generate "$events" --parallelism 2 -q \
      --param output="$work/out-$q-$r.jsonl"
    echo "$(now) - $t0" | bc -l >>"$work/$q.run"

    start_cluster "$q-$r"
    before=$(exchange_bytes)
    t0=$(now)
    job=$("$eddy" submit "$here/jobs/nexmark/$q.toml" --generate "$events" --parallelism 2 \
      --param output="$work/out-$q-$r/")
    "$eddy" status "$job" --wait --wait-timeout 600s >"$work/status" || { cat "$work/status"; exit 1; }
    t=$(echo "$(now) - $t0" | bc -l)
    sleep 0.5 # a last heartbeat of counters
    after=$(exchange_bytes)
    echo "$t" >>"$work/$q.cluster"
    echo "($after - $before) / $t / 1000000" | bc -l >>"$work/$q.rate"
    stop_cluster 2>/dev/null
  done
  a=$(median <"$work/$q.run"); b=$(median <"$work/$q.cluster"); rate=$(median <"$work/$q.rate")
  printf "%-6s %10.2f %10.2f %8.3f %14.1f\n" "$q" "$a" "$b" "$(echo "$b / $a" | bc -l)" "$rate"
done

# Waits until `eddy status` of $job shows a checkpoint above $1; prints the seconds since $2.
wait_checkpoint_above() {
  local n=$1 since=$2 last
  while true; do
    last=$("$eddy" status "$job" --timeout 5s 2>/dev/null | sed -n 's/^last checkpoint: \([0-9]*\)$/\1/p')
    if [ -n "$last" ] && [ "$last" -gt "$n" ]; then echo "$(now) - $since" | bc -l; return; fi
    sleep 0.02
  done
}

[ "$failures" = 1 ] || exit 0
echo
echo "== failures: q5 paced at 200k events/s, checkpoints every 200 ms, worker timeout 1s; median of $runs"
: >"$work/answer"; : >"$work/leader"; : >"$work/worker"
for r in $(seq "$runs"); do
  for victim in leader worker; do
    slots=2 start_cluster "fail-$victim-$r" 1s
    job=$("$eddy" submit "$here/jobs/nexmark/q5.toml" --generate 100000000 --max-rate 200000 \
      --parallelism 2 --checkpoint-interval 200ms --param output="$work/fail-$victim-$r/out/")
    wait_checkpoint_above 2 "$(now)" >/dev/null
    if [ "$victim" = leader ]; then
      leader=$("$eddy" list | sed -n 's/^leader: //p')
      t0=$(now); kill -9 "${coord_pids[$((leader - 1))]}"
      until new=$("$eddy" list --timeout 300ms 2>/dev/null | sed -n 's/^leader: //p') && [ -n "$new" ] && [ "$new" != "$leader" ]; do sleep 0.02; done
      echo "$(now) - $t0" | bc -l >>"$work/answer"
    else
      t0=$(now); kill -9 "${worker_pids[1]}"
    fi
    # Checkpoints recorded before the kill (a new leader knows them from the Raft log).
    last=$("$eddy" status "$job" | sed -n 's/^last checkpoint: \([0-9]*\)$/\1/p')
    wait_checkpoint_above "$last" "$t0" >>"$work/$victim"
    stop_cluster 2>/dev/null
  done
done
printf "leader killed: new leader answers after %.2f s, job checkpoints again after %.2f s\n" \
  "$(median <"$work/answer")" "$(median <"$work/leader")"
printf "worker killed: job checkpoints again after %.2f s (worker timeout 1 s)\n" "$(median <"$work/worker")"
