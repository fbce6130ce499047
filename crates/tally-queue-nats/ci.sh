#!/usr/bin/env bash
# The NATS queue's tests against a real nats-server with JetStream on 127.0.0.1:4222: installs the
# server (Debian's nats-server) when missing, starts it with JetStream when it is not running (or runs
# without JetStream), waits for its port, then runs the crate's tests with the `nats` feature. Fails
# loudly when the server cannot be had. Run as root (CI does); the restart test stops and starts the
# server with the same command line as below.
set -euo pipefail

cd "$(dirname "$0")/../.."

BIN=/usr/sbin/nats-server
STORE=/var/lib/nats-server
LOG=/var/log/nats-server.log
ARGS=(-a 127.0.0.1 -p 4222 -js -sd "$STORE" -l "$LOG")

if [ ! -x "$BIN" ]; then
    echo "ci.sh: installing nats-server"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server
fi
[ -x "$BIN" ] || { echo "ci.sh: $BIN is missing after installing nats-server" >&2; exit 1; }

# The server's INFO line, or nothing when the port is closed.
server_info() {
    timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/4222 && head -n 1 <&3' 2>/dev/null || true
}

start_server() {
    mkdir -p "$STORE"
    start-stop-daemon --start --oknodo --background --exec "$BIN" -- "${ARGS[@]}"
    for _ in $(seq 1 150); do
        if [ -n "$(server_info)" ]; then
            return 0
        fi
        sleep 0.2
    done
    echo "ci.sh: nats-server did not open 127.0.0.1:4222 within 30 s; last log lines:" >&2
    tail -n 30 "$LOG" >&2 || true
    exit 1
}

info="$(server_info)"
if [ -z "$info" ]; then
    echo "ci.sh: starting nats-server with JetStream"
    start_server
elif ! grep -q '"jetstream":true' <<<"$info"; then
    echo "ci.sh: the running nats-server has no JetStream; restarting it with JetStream"
    start-stop-daemon --stop --oknodo --retry 30 --exec "$BIN"
    start_server
fi
info="$(server_info)"
grep -q '"jetstream":true' <<<"$info" || { echo "ci.sh: no JetStream on 127.0.0.1:4222: $info" >&2; exit 1; }
echo "ci.sh: $(sed -E 's/.*"version":"([^"]*)".*/nats-server \1/' <<<"$info") with JetStream on 127.0.0.1:4222"

if [ "${TALLY_CI_SETUP_ONLY:-}" = 1 ]; then
    exit 0
fi
cargo test -p tally-queue-nats --features nats
