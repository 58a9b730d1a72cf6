#!/usr/bin/env bash
# Times Apache Flink and Eddy on the same Nexmark queries over the same file of generated events,
# with the same parallelisms and number of runs, and prints both tables and the ratios.
#
# Usage: bash benches/flink-vs-eddy.sh [-p "1 2"] [-r RUNS] [-n EVENTS] [-m MAX_OTHER] [QUERY...]
#   -p  parallelisms (default "1 2"), -r  runs per query and parallelism, medians (default 1),
#   -n  events in the input file (default 2000000), QUERY  e.g. q0 q5 (default: every query that
#   has both a job in jobs/nexmark and a Flink query in ../shared/flink/queries),
#   -m  a row whose other_s (below) exceeds MAX_OTHER CPU-seconds (default 1) is measured again,
#   up to twice, after waiting for the machine to be quiet; the quietest measurement is kept.
# Environment: CARGO_TARGET_DIR (default $HOME/.cache/eddy/target); EDDY_BENCH_DATA, where the
# event files are kept and reused (default $HOME/.cache/eddy/bench; 2M events take ~670 MB).
#
# Not the same conditions: Flink runs as ../shared/flink/bench.sh sets it up
# (streaming, RocksDB state backend, exactly-once checkpoints every 10 s, its input dealt into P
# files for P > 1), Eddy runs without checkpoints (they come with the next issue) and reads the
# one file with P subtasks (each scans the file and parses every P-th line). Both write into
# blackhole sinks. ev/s/core is events/s over the job's net runtime divided by P; ev/cpu_s events
# per CPU-second of the engine's process; other_s the CPU time the rest of the machine used
# meanwhile (should be near 0: otherwise the measurement was disturbed).
set -euo pipefail

usage() { sed -n '2,20p' "$0" >&2; exit 2; }
parallelisms="1 2"; runs=1; events=2000000; max_other=1; retries=2
while getopts "p:r:n:m:h" opt; do
  case $opt in
    p) parallelisms=$OPTARG ;; r) runs=$OPTARG ;; n) events=$OPTARG ;; m) max_other=$OPTARG ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared=$(dirname "$repo")/shared
[ -f "$shared/flink/bench.sh" ] || {
  echo "flink-vs-eddy.sh: $shared/flink/bench.sh not found: this script needs the team's shared/" \
    "directory beside the checkout ($shared)" >&2
  exit 1
}
venv=$HOME/.cache/eddy-flink/venv

queries=("$@")
if [ ${#queries[@]} -eq 0 ]; then
  for job in "$repo"/jobs/nexmark/q*.toml; do
    q=$(basename "$job" .toml)
    [ -f "$shared/flink/queries/$q.sql" ] && queries+=("$q")
  done
  mapfile -t queries < <(printf '%s\n' "${queries[@]}" | sort -V)
fi

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/eddy/target}
echo "# building eddy-bench (release)" >&2
(cd "$repo" && cargo build --release --quiet -p eddy-benches)
bench=$CARGO_TARGET_DIR/release/eddy-bench

data=${EDDY_BENCH_DATA:-$HOME/.cache/eddy/bench}
file=$data/events-$events.jsonl
if [ ! -f "$file" ]; then
  mkdir -p "$data"
  "$bench" --write-events "$events" --out "$file.tmp"
  mv "$file.tmp" "$file"
fi

if ! "$venv/bin/python" -c 'import pyflink' 2>/dev/null; then
  echo "# Flink is not installed in $venv: running $shared/flink/setup.sh" >&2
  bash "$shared/flink/setup.sh" "$venv"
fi

work=$(mktemp -d /tmp/flink-vs-eddy-XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "# $(date -u +%FT%TZ) on $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1));" \
  "$events events from $file; p = $parallelisms; $runs run(s); queries ${queries[*]}"
# One table per engine, same columns where they mean the same (see the header).
run_eddy() {
  local p=$1; shift
  "$bench" --parallelism "$(echo "$p" | tr -s ' ' ',')" --runs "$runs" --file "$file" "$@"
}
run_flink() {
  local p=$1; shift
  bash "$shared/flink/bench.sh" -p "$p" -r "$runs" -v "$venv" "$file" "$@"
}

# The value of column $2 in the row of query $3 and parallelism $4 of table $1 (by header name).
cell() {
  awk -v name="$2" -v q="$3" -v p="$4" '/^#/ || NF == 0 { next }
    $1 == "query" { for (i = 1; i <= NF; i++) if ($i == name) c = i; next }
    $1 == q && $2 == p { print $c }' "$1"
}

# "query p" of the rows of table $1 whose other_s exceeds the limit.
disturbed() {
  awk -v max="$max_other" '/^#/ || NF == 0 { next }
    $1 == "query" { for (i = 1; i <= NF; i++) if ($i == "other_s") c = i; next }
    $c > max { print $1, $2 }' "$1"
}

# Waits (up to 10 minutes) until the machine has used less than 0.3 cores over 5 s.
busy_ticks() { awk 'NR == 1 { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
wait_quiet() {
  local before
  for _ in $(seq 120); do
    before=$(busy_ticks); sleep 5
    [ $(($(busy_ticks) - before)) -lt $((30 * 5 * $(getconf CLK_TCK) / 100)) ] && return
    echo "# waiting for other processes to finish (machine busy)" >&2
  done
}

# Measures the disturbed rows of engine $1's table again and keeps the quieter measurement.
remeasure() {
  local engine=$1 table=$work/$1.txt q p row old new
  for _ in $(seq "$retries"); do
    local rows; rows=$(disturbed "$table")
    [ -n "$rows" ] || return 0
    while read -r q p; do
      old=$(cell "$table" other_s "$q" "$p")
      echo "# $engine $q p=$p: other processes used $old CPU-s meanwhile; measuring again" >&2
      wait_quiet
      row=$("run_$engine" "$p" "$q" < /dev/null | awk '!/^#/ && NF && $1 != "query"') || true
      [ -n "$row" ] || continue
      { grep -m1 '^query' "$table"; echo "$row"; } > "$work/row.txt"
      new=$(cell "$work/row.txt" other_s "$q" "$p")
      if awk -v a="$new" -v b="$old" 'BEGIN { exit !(a < b) }'; then
        awk -v q="$q" -v p="$p" -v row="$row" '!/^#/ && $1 == q && $2 == p { print row; next } { print }' \
          "$table" > "$work/table.tmp" && mv "$work/table.tmp" "$table"
        echo "# $q p=$p measured again: other_s $old -> $new" >> "$work/$engine.notes"
      fi
    done <<< "$rows"
  done
}

wait_quiet
run_eddy "$parallelisms" "${queries[@]}" > "$work/eddy.txt"
remeasure eddy
wait_quiet
run_flink "$parallelisms" "${queries[@]}" > "$work/flink.txt"
remeasure flink
for engine in eddy flink; do
  if [ "$engine" = eddy ]; then echo "# Eddy"; else echo "# Flink"; fi
  cat "$work/$engine.txt"
  [ ! -f "$work/$engine.notes" ] || cat "$work/$engine.notes"
done

echo "# Eddy / Flink"
awk '
  # Reads a table by its header: value[engine, query, p, column].
  FNR == 1 { engine = (FILENAME ~ /eddy\.txt$/) ? "eddy" : "flink" }
  /^#/ || NF == 0 { next }
  $1 == "query" { for (i = 1; i <= NF; i++) col[engine, $i] = i; next }
  {
    key = $1 SUBSEP $2
    if (!(key in seen)) { seen[key] = 1; order[++n] = key }
    for (c in wanted) v[engine, key, c] = $(col[engine, c])
    has[engine, key] = 1
  }
  BEGIN { wanted["ev/s/core"]; wanted["ev/cpu_s"]; wanted["other_s"] }
  function fmt(engine, key, c) { return has[engine, key] ? v[engine, key, c] : "failed" }
  function ratio(key, c) {
    if (!has["eddy", key] || !has["flink", key] || v["flink", key, c] == 0) return "-"
    return sprintf("%.1f", v["eddy", key, c] / v["flink", key, c])
  }
  END {
    printf "%-6s%3s%16s%15s%7s%5s%15s%14s%10s%14s%13s\n", "query", "p", "flink_ev/s/core",
      "eddy_ev/s/core", "ratio", ">=3", "flink_ev/cpu_s", "eddy_ev/cpu_s", "cpu_ratio", "flink_other_s",
      "eddy_other_s"
    for (i = 1; i <= n; i++) {
      key = order[i]; split(key, qp, SUBSEP)
      r = ratio(key, "ev/s/core")
      printf "%-6s%3s%16s%15s%7s%5s%15s%14s%10s%14s%13s\n", qp[1], qp[2],
        fmt("flink", key, "ev/s/core"), fmt("eddy", key, "ev/s/core"), r,
        r == "-" ? "-" : (v["eddy", key, "ev/s/core"] >= 3 * v["flink", key, "ev/s/core"] ? "yes" : "no"),
        fmt("flink", key, "ev/cpu_s"), fmt("eddy", key, "ev/cpu_s"), ratio(key, "ev/cpu_s"),
        fmt("flink", key, "other_s"), fmt("eddy", key, "other_s")
    }
  }
' "$work/eddy.txt" "$work/flink.txt"
echo "# ratio = Eddy / Flink (the goal: >= 3 for ev/s/core on every query). Flink: RocksDB, exactly-once"
echo "# checkpoints every 10 s; Eddy: no checkpoints yet (they come with the next issue), so the"
echo "# comparison flatters Eddy by the cost of checkpointing. *_other_s: CPU-seconds other processes"
echo "# used meanwhile (near 0 on a quiet machine)."
