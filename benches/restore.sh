#!/usr/bin/env bash
# How fast a restored run goes, against an uninterrupted one, with the release `eddy` binary.
#
# Usage: benches/restore.sh [-e EVENTS] [-k KILL_AFTER_S] [QUERY...]   (default 2M events, q5 q7 q9;
#        q5 reads 2M events in about 2 s: give it -e 20000000)
#
# Per query, over one file of EVENTS Nexmark events (JSON lines), checkpoints every 2 s:
#   full       the uninterrupted run: wall time, and its rate (events per second)
#   restored   the run after a SIGKILL at KILL_AFTER_S seconds (default: half the full time):
#              wall time, the events it still had to read, and its rate
#   ratio      restored rate / full rate (1.0: the restored run is as fast per event)
#   skip       how long the restored run took to reach its first new checkpoint (the restore
#              itself: state fetched, input skipped up to the checkpointed positions)
set -euo pipefail
events=2000000; kill_after=""
while getopts "e:k:" opt; do
  case $opt in
    e) events=$OPTARG ;; k) kill_after=$OPTARG ;;
    *) sed -n '2,15p' "$0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
queries=${*:-q5 q7 q9}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/eddy/target}
(cd "$here" && cargo build --release -q -p eddy -p eddy-benches)
eddy=$CARGO_TARGET_DIR/release/eddy
work=$(mktemp -d /tmp/eddy-restore-bench-XXXXXX)
trap 'rm -rf "$work"' EXIT
input=$work/events.jsonl
"$CARGO_TARGET_DIR/release/eddy-bench" --write-events "$events" --out "$input" >/dev/null
now() { date +%s.%N; }
run() { # query dir -> runs to the end
  "$eddy" run "$here/jobs/nexmark/$1.toml" --param "input=$input" --param "output=$2/out/" \
    --checkpoint-dir "$2/ckpt" --checkpoint-interval 2s -q 2>"$2/stderr"
}
printf "%-5s %9s %11s %11s %12s %11s %7s %8s\n" query "full s" "full ev/s" "restored s" "events left" "rest. ev/s" ratio "skip s"
for q in $queries; do
  rm -rf "$work/full" "$work/killed"; mkdir -p "$work/full" "$work/killed"
  t0=$(now); run "$q" "$work/full"; t1=$(now)
  full=$(echo "$t1 - $t0" | bc -l)
  k=${kill_after:-$(echo "$full / 2" | bc -l)}
  "$eddy" run "$here/jobs/nexmark/$q.toml" --param "input=$input" --param "output=$work/killed/out/" \
    --checkpoint-dir "$work/killed/ckpt" --checkpoint-interval 2s -q 2>/dev/null &
  pid=$!; sleep "$k"; kill -9 $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
  # The events the restored run still reads: the input past the lowest checkpointed position.
  meta=$(ls -d "$work"/killed/ckpt/chk-*/_metadata 2>/dev/null | sort | tail -1)
  if [ -z "$meta" ]; then
    echo "$q: no checkpoint completed in the ${k}s before the kill; give it more events (-e) or a later kill (-k)" >&2
    continue
  fi
  done_events=$(python3 -c "
import json,sys
m=json.load(open('$meta'))
src=[o for o in m['operators'] if o['kind']=='source']
pos=[p for o in src for s in o['subtasks'] for (a,b,p) in s['state'].get('splits',[])]
print(min(pos) if pos else 0)")
  left=$((events - done_events))
  before=$(ls "$work"/killed/ckpt | grep -c chk- || true)
  t2=$(now)
  ( run "$q" "$work/killed" ) & rpid=$!
  first=""
  while kill -0 $rpid 2>/dev/null; do
    if [ -z "$first" ] && [ "$(ls "$work"/killed/ckpt | grep -c chk- || true)" -gt "$before" ]; then first=$(now); fi
    sleep 0.05
  done
  wait $rpid; t3=$(now)
  restored=$(echo "$t3 - $t2" | bc -l)
  skip=$(echo "${first:-$t3} - $t2 - 2" | bc -l)
  printf "%-5s %9.2f %11.0f %11.2f %12d %11.0f %7.2f %8.2f\n" "$q" "$full" "$(echo "$events / $full" | bc -l)" \
    "$restored" "$left" "$(echo "$left / $restored" | bc -l)" \
    "$(echo "($left / $restored) / ($events / $full)" | bc -l)" "$skip"
done
