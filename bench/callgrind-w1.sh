#!/usr/bin/env bash
# Instructions the server executes per W1 sale over HTTP, counted by callgrind: a figure that does not
# move with the machine's speed (wall-clock figures on this VM vary by ±30 % within an hour).
#
#   bench/callgrind-w1.sh [path/to/tally] [small] [large]
#
# Runs `tally serve` under `valgrind --tool=callgrind` twice, loads it with `tally load --workload w1`
# (W1's set-up and deliveries, then `small` and `large` sales; 1,000 and 20,000 by default), and prints
# (Ir(large) - Ir(small)) / (large - small): the marginal cost of one sale, its HTTP request, intake,
# processing, projection and its share of commits, plus the status request `tally load` makes to
# verify it. The difference is taken over many sales because each total moves by 1–2 % from run to
# run (batch sizes and timer work depend on timing): over 19,000 sales that is ±2 % per sale. Needs
# valgrind and a release build (`cargo build --release -p tally`); about 5 minutes.
set -euo pipefail

bin=${1:-target/release/tally}
small=${2:-1000}
large=${3:-20000}
key=tally_bench_callgrind_admin_key
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
[ -x "$bin" ] || { echo "$bin: no such binary (cargo build --release -p tally)" >&2; exit 1; }

# Prints the total instructions of one server run with `sales` sales.
count() {
  local sales=$1 port=$2 dir="$work/data-$1" out="$work/cg-$1.out"
  mkdir -p "$dir"
  TALLY_LOG=warn TALLY_ADMIN_KEY=$key valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$bin" --data-dir "$dir" serve --listen "127.0.0.1:$port" >"$work/server-$sales.log" 2>&1 &
  local server=$!
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.2
  done
  if ! "$bin" load --url "http://127.0.0.1:$port" --key "$key" --workload w1 --sales "$sales" \
    >"$work/load-$sales.log" 2>&1; then
    kill "$server" 2>/dev/null || true
    cat "$work/load-$sales.log" >&2
    echo "tally load failed (or its books did not verify)" >&2
    exit 1
  fi
  kill -TERM "$server"
  wait "$server" || true
  grep -E '^(summary|totals):' "$out" | head -1 | awk '{print $2}'
}

port=$((20000 + $$ % 20000))
a=$(count "$small" "$port")
b=$(count "$large" "$((port + 1))")
echo "instructions: ${small} sales ${a}, ${large} sales ${b}"
echo "per sale: $(( (b - a) / (large - small) ))"
