#!/bin/bash
# W1 over HTTP with and without a mix of the named queries beside it (issue 18's figure).
#   bench/w1-queries-mix.sh BIN PORT MIX     MIX: 0 (W1 alone) or 1 (W1 + 64 connections of queries)
# Starts BIN serve on a fresh data dir with queries.example.toml, runs
# `tally load --workload w1 --sales 60000 --connections 64`, and with MIX=1 also
# `tally load --workload queries --connections 64 --duration 25s` from the start; prints both
# summary lines. Alternate MIX=0 and MIX=1 runs within one period and compare them in pairs.
set -u
BIN=$1; PORT=$2; MIX=$3
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
D=$(mktemp -d)
export TALLY_ADMIN_KEY=tally_bench_admin_secret_0123456789
"$BIN" serve --data-dir "$D" --listen 127.0.0.1:"$PORT" --config "$ROOT/queries.example.toml" > "$D/out.log" 2> "$D/err.log" &
SP=$!
for _ in $(seq 1 100); do curl -s 127.0.0.1:"$PORT"/healthz > /dev/null && break; sleep 0.2; done
if [ "$MIX" = 1 ]; then
  "$BIN" load --url http://127.0.0.1:"$PORT" --workload queries --connections 64 --duration 25s > "$D/mix.out" 2>&1 &
  MP=$!
fi
"$BIN" load --url http://127.0.0.1:"$PORT" --workload w1 --sales 60000 --connections 64 2> /dev/null | grep -E "^LOAD"
if [ "$MIX" = 1 ]; then wait "$MP"; grep QUERYMIX "$D/mix.out"; fi
kill "$SP"; wait "$SP" 2> /dev/null
rm -rf "$D"
