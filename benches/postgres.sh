#!/usr/bin/env bash
# What writing into PostgreSQL exactly once costs, measured with the release `eddy` binary.
#
# Usage: benches/postgres.sh [-e EVENTS] [-r RUNS] [-p P]   (defaults: 2M events, 3 runs, p=1)
#
# Nexmark q0 (every bid passes: 92% of the events become rows) on the generator, checkpoints
# every second, interleaved RUNS times in two configurations:
#   files     the exactly-once directory sink (the baseline)
#   postgres  the exactly-once PostgreSQL sink into a table of a local server (fsync on)
# and prints the median wall time, the ratio to the baseline and the rows per second written.
set -euo pipefail
events=2000000; runs=3; parallelism=1
while getopts "e:r:p:" opt; do
  case $opt in
    e) events=$OPTARG ;; r) runs=$OPTARG ;; p) parallelism=$OPTARG ;;
    *) sed -n '2,10p' "$0" >&2; exit 2 ;;
  esac
done
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/eddy/target}
(cd "$here" && cargo build --release -q -p eddy)
eddy=$CARGO_TARGET_DIR/release/eddy
work=$(mktemp -d /tmp/eddy-pg-bench-XXXXXX)
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" -eq 0 ] && chown postgres: "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$bin/initdb" -D "$work/pg" -U eddy --auth=trust -E UTF8 >/dev/null
as_pg "$bin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w \
  -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$work" start >/dev/null
trap 'as_pg "$bin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null; rm -rf "$work"' EXIT
url="postgresql://eddy@127.0.0.1:$port/postgres"
psql() { command psql -q -X "$url" "$@"; }
psql -c "CREATE TABLE q0 (auction bigint, bidder bigint, price bigint, \"dateTime\" timestamp(3), extra text)"
{ awk '/^\[\[sink\]\]/ {exit} {print}' "$here/jobs/nexmark/q0.toml" |
    sed 's/^output = .*/pg = { description = "PostgreSQL URL" }/'
  printf '[[sink]]\nname = "result"\ninput = "q0"\nconnector = "postgres"\nurl = "${pg}"\ntable = "q0"\n'
} > "$work/q0-pg.toml"
now() { date +%s.%N; }
echo "# $(date -u +%FT%TZ) eddy $(git -C "$here" rev-parse --short HEAD) on $(nproc) cores; q0, $events generated events, p=$parallelism, checkpoints 1 s, median of $runs"
declare -A times=()
rows=0
for ((r = 0; r < runs; r++)); do
  for c in files postgres; do
    rm -rf "$work/ckpt" "$work/out"
    psql -c "TRUNCATE q0"
    start=$(now)
    if [ $c = files ]; then
      "$eddy" run "$here/jobs/nexmark/q0.toml" --generate "$events" --parallelism "$parallelism" \
        --param output="$work/out/" --checkpoint-dir "$work/ckpt" --checkpoint-interval 1s 2>/dev/null
    else
      "$eddy" run "$work/q0-pg.toml" --generate "$events" --parallelism "$parallelism" \
        --param pg="$url" --checkpoint-dir "$work/ckpt" --checkpoint-interval 1s 2>/dev/null
      rows=$(psql -t -A -c "SELECT count(*) FROM q0")
    fi
    times[$c]="${times[$c]:-} $(echo "$(now) - $start" | bc)"
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
base=$(echo "${times[files]}" | median)
printf "%-9s %8s %7s %10s\n" sink wall_s ratio rows_per_s
for c in files postgres; do
  m=$(echo "${times[$c]}" | median)
  printf "%-9s %8.2f %7.3f %10.0f\n" $c "$m" "$(echo "$m / $base" | bc -l)" "$(echo "$rows / $m" | bc -l)"
done
