#!/usr/bin/env bash
# What checkpoints cost and how fast a restart resumes, measured with the release `eddy` binary.
#
# Usage: benches/checkpoint-overhead.sh [-e EVENTS] [-r RUNS] [-p P] [QUERY...]   (default q5 q7 q8)
#
# Throughput: each query runs on the Nexmark generator (EVENTS events, default 20M) in four
# configurations, interleaved RUNS times (default 2) so that machine noise hits all alike:
#   memory       in-memory state, no checkpoints (the baseline)
#   rocksdb      RocksDB state, no checkpoints
#   rocks+10s    RocksDB state, checkpoints every 10 s, exactly-once directory sink
#   rocks+1s     the same every 1 s
# and prints the median wall time, the ratio to the baseline (1.05 = 5 % slower), the number of
# checkpoints, the last checkpoint's duration and the checkpoint directory's size at the end.
#
# Recovery: q5 over 100k events (the shared input's size) is killed with SIGKILL after its first
# checkpoint, then started again; "restart" is the time from the new process's start to the
# first output file of a checkpoint the new process took.
set -euo pipefail
events=20000000; runs=2; parallelism=1
while getopts "e:r:p:" opt; do
  case $opt in
    e) events=$OPTARG ;; r) runs=$OPTARG ;; p) parallelism=$OPTARG ;;
    *) sed -n '2,17p' "$0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
queries=${*:-q5 q7 q8}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/eddy/target}
(cd "$here" && cargo build --release -q -p eddy)
eddy=$CARGO_TARGET_DIR/release/eddy
work=$(mktemp -d /tmp/eddy-ckpt-bench-XXXXXX)
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }

configs=(memory rocksdb rocks+10s rocks+1s)
args_of() {
  case $1 in
    memory) echo "--state-backend memory" ;;
    rocksdb) echo "--state-backend rocksdb" ;;
    rocks+10s) echo "--checkpoint-dir $work/ckpt --checkpoint-interval 10s" ;;
    rocks+1s) echo "--checkpoint-dir $work/ckpt --checkpoint-interval 1s" ;;
  esac
}

echo "# $(date -u +%FT%TZ) eddy $(git -C "$here" rev-parse --short HEAD) on $(nproc) cores; $events generated events, p=$parallelism, median of $runs"
printf "%-5s %-10s %8s %7s %6s %9s %9s\n" query config wall_s ratio ckpts last_ms size
for q in $queries; do
  declare -A times=() info=()
  for ((r = 0; r < runs; r++)); do
    for c in "${configs[@]}"; do
      rm -rf "$work/ckpt" "$work/out"
      start=$(now)
      # shellcheck disable=SC2046
      log=$("$eddy" run "$here/jobs/nexmark/$q.toml" --generate "$events" --parallelism "$parallelism" \
        --param output="$work/out/" $(args_of "$c") 2>&1)
      t=$(echo "$(now) - $start" | bc)
      times[$c]="${times[$c]:-} $t"
      ck=$(echo "$log" | sed -n 's/^\([0-9]*\) checkpoints completed (last: [0-9]*, took \([0-9]*\) ms).*/\1 \2/p')
      size=$( (du -sh "$work/ckpt" 2>/dev/null || true) | cut -f1)
      info[$c]="${ck:-0 -} ${size:--}"
    done
  done
  base=""
  for c in "${configs[@]}"; do
    med=$(echo "${times[$c]}" | tr ' ' '\n' | sed '/^$/d' | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')
    [ -z "$base" ] && base=$med
    read -r n last size <<<"${info[$c]}"
    printf "%-5s %-10s %8.2f %7.3f %6s %9s %9s\n" "$q" "$c" "$med" "$(echo "$med / $base" | bc -l)" "$n" "$last" "$size"
  done
  unset times info
done

# Recovery: kill after the first checkpoint, restart, time to the first new committed file.
rm -rf "$work/ckpt" "$work/out"
src=(--generate 100000)
run() { "$eddy" run "$here/jobs/nexmark/q5.toml" "${src[@]}" --param output="$work/out/" \
  --checkpoint-dir "$work/ckpt" --checkpoint-interval 100ms --batch-size 64 -q; }
run & pid=$!
while ! ls "$work"/ckpt/chk-*/_metadata >/dev/null 2>&1; do sleep 0.005; done
kill -9 $pid; wait $pid 2>/dev/null || true
# The restart first re-publishes what the restored checkpoint staged; "new" output is a part
# file of a checkpoint the new run took (ids above the restored one).
restored=$(ls "$work/ckpt" | sed -n 's/^chk-0*\([0-9][0-9]*\)$/\1/p' | sort -n | tail -1)
newer() { ls "$work/out" | sed -n 's/^part-0*\([0-9][0-9]*\)-.*/\1/p' | awk -v r="$restored" '$1 > r' | wc -l; }
start=$(now)
run & pid=$!
while [ "$(newer)" -eq 0 ]; do sleep 0.002; done
first=$(echo "$(now) - $start" | bc)
wait $pid
total=$(echo "$(now) - $start" | bc)
printf "recovery q5 100k: restart to first new committed output %.3f s, restart to end %.3f s\n" "$first" "$total"
