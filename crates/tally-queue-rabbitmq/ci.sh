#!/usr/bin/env bash
# Runs tally-queue-rabbitmq's tests against a real RabbitMQ on this machine: installs the broker from
# Debian's packages if it is missing, starts it if it is not running, waits for its port, and fails
# loudly if it cannot. The tests need rabbitmqctl (the restart test stops and starts the broker) and
# must run as root or as the rabbitmq user.
set -euo pipefail

cd "$(dirname "$0")/../.."

PORT=5672
export TALLY_TEST_AMQP_URL="${TALLY_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:${PORT}/%2f}"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null; }

if ! command -v rabbitmq-server >/dev/null 2>&1; then
    echo "ci.sh: rabbitmq-server is not installed; installing it from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
fi

# The broker listens on loopback only, under a fixed node name (as on the machines of this kind).
if [ ! -s /etc/rabbitmq/rabbitmq.conf ]; then
    echo "listeners.tcp.local = 127.0.0.1:${PORT}" >/etc/rabbitmq/rabbitmq.conf
fi
if [ ! -s /etc/rabbitmq/rabbitmq-env.conf ]; then
    printf 'NODENAME=rabbit@localhost\nERL_EPMD_ADDRESS=127.0.0.1\n' >/etc/rabbitmq/rabbitmq-env.conf
fi

if ! port_open; then
    echo "ci.sh: RabbitMQ is not running; starting it"
    if [ -x /etc/init.d/rabbitmq-server ]; then
        /etc/init.d/rabbitmq-server start || true
    fi
    if ! port_open; then
        rabbitmq-server -detached || true
    fi
    for _ in $(seq 1 120); do
        port_open && break
        sleep 1
    done
fi
if ! port_open; then
    echo "ci.sh: FAILED: RabbitMQ is not listening on 127.0.0.1:${PORT} after 120 s" >&2
    exit 1
fi
if ! timeout 150 rabbitmqctl -q await_startup --timeout 120; then
    echo "ci.sh: FAILED: RabbitMQ did not finish starting" >&2
    exit 1
fi
# Quorum queues (enabled on fresh installs; a node upgraded from an old version may lack the flag).
rabbitmqctl -q enable_feature_flag quorum_queue >/dev/null
rabbitmqctl -q status | grep -m1 'RabbitMQ version' || true

# Queues left behind by an interrupted test run (the tests delete their own).
stale=$(timeout 120 rabbitmqctl -q list_queues name 2>/dev/null | grep -E '^tally-(test|bench)-' || true)
if [ -n "$stale" ]; then
    echo "ci.sh: deleting $(echo "$stale" | wc -l) queues left by earlier test runs"
    echo "$stale" | while read -r queue; do
        rabbitmqctl -q delete_queue "$queue" >/dev/null || true
    done
fi

if [ "${TALLY_CI_SETUP_ONLY:-}" = 1 ]; then
    exit 0
fi
cargo test -p tally-queue-rabbitmq --features rabbitmq
