#!/usr/bin/env bash
# State over time with and without a state TTL, with the release `eddy` binary: a job whose key
# space grows without end (Nexmark bids counted per bidder and auction, and joined with their
# auction, as q20 does without its filter) runs paced at a steady rate with checkpoints, and
# every 10 s the script prints the process's resident memory (RSS), the size of the RocksDB
# working state and of the checkpoint directory (one checkpoint retained), once without `ttl`
# and once with it.
#
# Usage: benches/ttl.sh [-s SECONDS] [-r RATE] [-t TTL]
#   -s  seconds of each run (default 180)
#   -r  events per second, event time and wall clock alike (default 20000)
#   -t  the TTL of the second run (default 20s)
#
# Without a TTL the state grows with every new bidder-auction pair and every auction; with it,
# it levels off once the first TTL has passed (at about TTL x rate x the share of new keys).
set -euo pipefail
seconds=180; rate=20000; ttl=20s
while getopts "s:r:t:" opt; do
  case $opt in
    s) seconds=$OPTARG ;; r) rate=$OPTARG ;; t) ttl=$OPTARG ;;
    *) sed -n '2,14p' "$0" >&2; exit 2 ;;
  esac
done
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$here/scripts/setup.sh" build
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/eddy/target}
(cd "$here" && cargo build --release -q -p eddy)
eddy=$CARGO_TARGET_DIR/release/eddy
work=$(mktemp -d /tmp/eddy-ttl-bench-XXXXXX)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
pid=""

job() { # ttl line -> job file
  cat <<EOF
name = "ttl-bench"
[params]
input = {}

[[source]]
name = "events"
connector = "file"
format = "nexmark"
path = "\${input}"
watermark = { column = "dateTime", delay = "4s" }

[[operator]]
name = "per_pair"
type = "group_aggregate"
input = "events.bid"
group_by = ["bidder", "auction"]
aggregates = ["COUNT(*) AS bids", "MAX(price) AS top"]
$1

[[operator]]
name = "with_auction"
type = "join"
left = "events.auction AS A"
right = "events.bid AS B"
on = "A.id = B.auction"
columns = ["A.id", "A.seller", "B.bidder", "B.price"]
$1

[[sink]]
name = "pairs"
input = "per_pair"
connector = "blackhole"

[[sink]]
name = "joined"
input = "with_auction"
connector = "blackhole"
EOF
}

size() { du -sm "$1" 2>/dev/null | cut -f1; }
events=$((seconds * rate))
printf "%-8s %6s %8s %10s %9s\n" ttl "at s" "RSS MiB" "state MiB" "ckpt MiB"
for variant in none "$ttl"; do
  line=""; [ "$variant" != none ] && line="ttl = \"$variant\""
  dir=$work/$variant; mkdir -p "$dir"
  job "$line" > "$dir/job.toml"
  "$eddy" run "$dir/job.toml" --generate "$events" --rate "$rate" --max-rate "$rate" \
    --checkpoint-dir "$dir/ckpt" --checkpoint-interval 5s --retain-checkpoints 1 \
    --state-dir "$dir/state" -q 2>"$dir/stderr" &
  pid=$!
  start=$(date +%s)
  while kill -0 $pid 2>/dev/null; do
    sleep 10
    kill -0 $pid 2>/dev/null || break
    rss=$(( $(awk '/VmRSS/ {print $2}' /proc/$pid/status 2>/dev/null || echo 0) / 1024 ))
    printf "%-8s %6s %8s %10s %9s\n" "$variant" $(( $(date +%s) - start )) "$rss" \
      "$(size "$dir/state")" "$(size "$dir/ckpt")"
  done
  wait $pid || { echo "the $variant run failed:" >&2; tail -5 "$dir/stderr" >&2; exit 1; }
done
