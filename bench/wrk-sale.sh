#!/usr/bin/env bash
# The server's ceiling for the lightest command, with a client far cheaper than `tally load`:
#
#   bench/wrk-sale.sh [path/to/tally] [connections] [seconds]
#
# Starts `tally serve` on a fresh data dir, registers one supplier, store and item, then runs wrk
# (Debian package `wrk`) with bench/wrk-sale.lua: one-line sales on `connections` keep-alive
# connections (64 by default) for `seconds` (10). Also measures, for comparison, a request the
# server refuses before the writer (422, an empty sale: HTTP, auth and JSON only).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-target/release/tally}
conns=${2:-64}
secs=${3:-10}
port=18381
export TALLY_ADMIN_KEY=tally_bench_wrk_admin_key
url="http://127.0.0.1:$port"
work=$(mktemp -d)
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }

TALLY_LOG=warn "$bin" --data-dir "$work" serve --listen "127.0.0.1:$port" >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -sf "$url/readyz" >/dev/null && break; sleep 0.1; done

post() {
  curl -sf -X POST -H "Authorization: Bearer $TALLY_ADMIN_KEY" -H 'content-type: application/json' \
    "$url$1" -d "$2" >/dev/null
}
post /v1/suppliers '{"supplier_id":"sup-1","name":"Supplier"}'
post /v1/stores '{"store_id":"store-1","name":"Store","timezone":"Europe/Paris"}'
post /v1/items '{"item_id":"item-1","name":"Item","supplier_id":"sup-1","unit_price_cents":100}'
sleep 0.5

echo "== one-line sales (202, then rejected by the processor: no stock)"
wrk -t1 -c"$conns" -d"${secs}s" -s "$here/wrk-sale.lua" "$url"
echo "== refused before the writer (422)"
wrk -t1 -c"$conns" -d"${secs}s" -H "Authorization: Bearer $TALLY_ADMIN_KEY" \
  -H 'Content-Type: application/json' -s <(printf '%s\n' \
  'wrk.method = "POST"' 'wrk.path = "/v1/sales"' \
  'wrk.body = [[{"sale_id":"s-1","store_id":"store-1","lines":[]}]]') "$url"
