#!/usr/bin/env bash
# A real OpenAPI client tries the whole contract: schemathesis (from PyPI) generates valid and invalid
# requests for every operation of /openapi.json of a running `tally serve` (embedded storage, a fresh
# temporary data dir, an admin key), including stateful sequences that follow the 202s' links. The run
# fails on any 5xx and on any answer the document does not describe: its status, content type,
# headers or body schema. The server must then stop cleanly on SIGTERM.
#
# Usage: .ci/schemathesis.sh [TALLY_BINARY]     (default target/debug/tally; build it first)
# Environment: SCHEMATHESIS_MAX_EXAMPLES (default 60), SCHEMATHESIS_SEED (default 1; "random" for a
# new one each run), SCHEMATHESIS_VERSION (pinned below). schemathesis is installed once into a venv
# under target/schemathesis and reused while its version matches.
set -euo pipefail
cd "$(dirname "$0")/.."

TALLY="${1:-target/debug/tally}"
VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-60}"
SEED="${SCHEMATHESIS_SEED:-1}"
WORK=target/schemathesis
VENV="$WORK/venv"

[ -x "$TALLY" ] || { echo "no tally binary at $TALLY: run 'cargo build -p tally' first" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is needed to run schemathesis" >&2; exit 1; }
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
  echo "schemathesis $VERSION needs Python 3.11 or newer; found $(python3 --version 2>&1)" >&2
  exit 1
}

if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -qF "version $VERSION"; then
  echo "installing schemathesis $VERSION into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION"
fi
"$VENV/bin/schemathesis" --version

DATA="$(mktemp -d)"
SERVER=""
cleanup() {
  if [ -n "$SERVER" ] && kill -0 "$SERVER" 2>/dev/null; then kill -KILL "$SERVER" 2>/dev/null || true; fi
  rm -rf "$DATA"
}
trap cleanup EXIT

KEY="tally_schemathesis_$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
TALLY_ADMIN_KEY="$KEY" TALLY_LOG=warn "$TALLY" serve --data-dir "$DATA/data" --listen 127.0.0.1:0 \
  >"$DATA/stdout" 2>"$DATA/stderr" &
SERVER=$!
URL=""
for _ in $(seq 1 300); do
  URL="$(sed -n 's/^tally listening on \(http[^ ]*\).*/\1/p' "$DATA/stdout")"
  [ -n "$URL" ] && break
  kill -0 "$SERVER" 2>/dev/null || { echo "tally serve exited at start:" >&2; cat "$DATA/stderr" >&2; exit 1; }
  sleep 0.2
done
[ -n "$URL" ] || { echo "tally serve did not print its listening line in 60 s" >&2; cat "$DATA/stderr" >&2; exit 1; }
echo "tally serve at $URL (data in $DATA)"

seed_arg=(--seed "$SEED")
[ "$SEED" = random ] && seed_arg=()
status=0
# /v1/events/live is a never-ending SSE stream; every other operation is tried. Long polls end as
# soon as their command is processed, well within the request timeout.
timeout 600 "$VENV/bin/schemathesis" --config-file .ci/schemathesis.toml run "$URL/openapi.json" \
  --header "Authorization: Bearer $KEY" \
  --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance,response_headers_conformance \
  --exclude-path /v1/events/live \
  --max-examples "$MAX_EXAMPLES" "${seed_arg[@]}" \
  --request-timeout 35 \
  --report junit --report-dir "$WORK/report" \
  || status=$?

kill -TERM "$SERVER"
server_exit=0
wait "$SERVER" || server_exit=$?
SERVER=""
if [ "$server_exit" -ne 0 ]; then
  echo "tally serve exited $server_exit after SIGTERM" >&2
  status=1
fi
if grep -q "panicked" "$DATA/stderr"; then
  echo "tally serve panicked:" >&2
  grep -A5 "panicked" "$DATA/stderr" >&2
  status=1
fi
[ "$status" -eq 0 ] || { echo "schemathesis: failures (server log: below)" >&2; tail -n 50 "$DATA/stderr" >&2; }
exit "$status"
