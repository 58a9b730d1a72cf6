#!/usr/bin/env bash
# A query planned from Flink's SQL against its hand-written job file, measured with the release
# `eddy` binary: both run `eddy run` over the Nexmark generator (EVENTS events, default 10M),
# interleaved RUNS times (default 3), and the script prints each pair's wall times and the
# ratio sql/toml (1.05 = SQL 5 % slower), then the median ratio per query.
#
# Usage: benches/sql.sh [-e EVENTS] [-r RUNS] [QUERY...]   (default q5 q8)
set -euo pipefail
events=10000000; runs=3
while getopts "e:r:" opt; do
  case $opt in
    e) events=$OPTARG ;; r) runs=$OPTARG ;;
    *) sed -n '2,7p' "$0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
queries=("${@:-q5 q8}")
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/eddy/target}"
cargo build --release -q -p eddy
eddy="$CARGO_TARGET_DIR/release/eddy"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
seconds() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); awk -v s="$s" -v e="$e" 'BEGIN { print e - s }'; }
for q in ${queries[*]}; do
  ratios=()
  for i in $(seq "$runs"); do
    sql=$(seconds "$eddy" run sql/tests/queries/ddl.sql "sql/tests/queries/$q.sql" \
      --generate "$events" --sink-dir "$out/sql-$q-$i")
    toml=$(seconds "$eddy" run "jobs/nexmark/$q.toml" --generate "$events" \
      --param "output=$out/toml-$q-$i.jsonl")
    ratio=$(awk -v a="$sql" -v b="$toml" 'BEGIN { printf "%.3f", a / b }')
    ratios+=("$ratio")
    printf '%s  sql %6.2f s  toml %6.2f s  sql/toml %s\n' "$q" "$sql" "$toml" "$ratio"
  done
  median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')
  echo "$q  median sql/toml $median over $runs pairs ($events events)"
done
