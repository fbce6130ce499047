#!/bin/bash
# W1 over HTTP while every read model is rebuilt back to back, against W1 with the same query checks
# and no rebuild (issue 20's figure).
#   bench/w1-rebuild.sh BIN PORT CHECKS     CHECKS: queries (no rebuild) or rebuilds
# Starts BIN serve on a fresh data dir and runs
# `tally load --workload w1 --sales 60000 --connections 64 --checks CHECKS`: while the sales run, a
# query loop checks every answer of each store's daily sales and inventory against the same query
# folded from the log to the answer's position (as_of_position), and with CHECKS=rebuilds every
# projection is rebuilt (POST /v1/admin/projections/{name}/rebuild, all six, until swapped in) again
# and again. Prints the LOAD and CHECKS lines. Alternate the two within one period.
set -u
BIN=$1; PORT=$2; CHECKS=$3
D=$(mktemp -d)
export TALLY_ADMIN_KEY=tally_bench_admin_secret_0123456789
"$BIN" serve --data-dir "$D" --listen 127.0.0.1:"$PORT" > "$D/out.log" 2> "$D/err.log" &
SP=$!
for _ in $(seq 1 100); do curl -s 127.0.0.1:"$PORT"/healthz > /dev/null && break; sleep 0.2; done
"$BIN" load --url http://127.0.0.1:"$PORT" --workload w1 --sales 60000 --connections 64 --checks "$CHECKS" 2> "$D/load.err" | grep -E "^(LOAD|CHECKS)" || tail -5 "$D/load.err"
kill "$SP"; wait "$SP" 2> /dev/null
rm -rf "$D"
