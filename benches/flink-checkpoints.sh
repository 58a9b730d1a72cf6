#!/usr/bin/env bash
# Apache Flink and Eddy with the same state backend (RocksDB) and the same checkpoint intervals,
# on the same file of generated Nexmark events, one query after the other.
#
# Usage: bash benches/flink-checkpoints.sh [-n EVENTS] [-p P] [-i "10000 1000"] [QUERY...]
#   (default 2000000 events, p=1, intervals 10 s and 1 s, queries q5 q7 q8)
# Flink runs through ../shared/flink/bench.sh (its job_s: net job runtime). Eddy runs the `eddy`
# command with --checkpoint-dir and the same interval (its wall time, process start included),
# and once with in-memory state and no checkpoints for reference. Sinks: Flink's blackhole, Eddy's
# exactly-once directory sink (the results of these queries are small).
set -euo pipefail
events=2000000; parallelism=1; intervals="10000 1000"
while getopts "n:p:i:" opt; do
  case $opt in
    n) events=$OPTARG ;; p) parallelism=$OPTARG ;; i) intervals=$OPTARG ;;
    *) sed -n '2,11p' "$0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
queries=${*:-q5 q7 q8}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared=$(dirname "$repo")/shared
[ -f "$shared/flink/bench.sh" ] || { echo "needs $shared/flink/bench.sh" >&2; exit 1; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/eddy/target}
(cd "$repo" && cargo build --release --quiet -p eddy -p eddy-benches)
eddy=$CARGO_TARGET_DIR/release/eddy
data=${EDDY_BENCH_DATA:-$HOME/.cache/eddy/bench}
file=$data/events-$events.jsonl
if [ ! -f "$file" ]; then
  mkdir -p "$data"
  "$CARGO_TARGET_DIR/release/eddy-bench" --write-events "$events" --out "$file.tmp"
  mv "$file.tmp" "$file"
fi
work=$(mktemp -d /tmp/flink-checkpoints-XXXXXX)
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }

echo "# $(date -u +%FT%TZ) on $(nproc) cores; $events events; p=$parallelism"
for q in $queries; do
  for ms in $intervals; do
    echo "## $q, checkpoints every $ms ms"
    bash "$shared/flink/bench.sh" -p "$parallelism" -r 1 -x "--checkpoint-ms=$ms" "$file" "$q" 2>/dev/null |
      sed 's/^/flink  /'
    rm -rf "$work/ckpt" "$work/out"
    start=$(now)
    log=$("$eddy" run "$repo/jobs/nexmark/$q.toml" --param input="$file" --param output="$work/out/" \
      --parallelism "$parallelism" --checkpoint-dir "$work/ckpt" --checkpoint-interval "${ms}ms" 2>&1)
    t=$(echo "$(now) - $start" | bc)
    echo "eddy   $q rocksdb+${ms}ms wall_s=$t events/s=$(echo "$events / $t" | bc) $(echo "$log" | grep 'checkpoints completed' || echo '0 checkpoints')"
  done
  rm -rf "$work/out"
  start=$(now)
  "$eddy" run "$repo/jobs/nexmark/$q.toml" --param input="$file" --param output="$work/out/" \
    --parallelism "$parallelism" -q
  t=$(echo "$(now) - $start" | bc)
  echo "eddy   $q memory, no checkpoints wall_s=$t events/s=$(echo "$events / $t" | bc)"
done
