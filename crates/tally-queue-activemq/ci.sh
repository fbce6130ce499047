#!/usr/bin/env bash
# Installs, configures and starts Debian's ActiveMQ (5.17) with a STOMP connector on 127.0.0.1:61613,
# then runs this crate's tests against it. Idempotent: safe to run on a machine where it ran before.
# Needs root (apt-get, /etc/activemq, the init script). TALLY_CI_SETUP_ONLY=1 (or
# TALLY_ACTIVEMQ_SKIP_TESTS=1) only sets up the broker.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
instance=/etc/activemq/instances-available/main
port=61613

if ! dpkg -s activemq >/dev/null 2>&1; then
    echo "ci.sh: installing activemq" >&2
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q activemq
fi

# The broker configuration tally needs: the STOMP connector, the statistics plugin (exact queue depth
# by request/reply), unbounded message-group assignments (the default LRU map of 1024 groups could
# move a partition to another consumer while it still has messages in flight), larger dispatch pages,
# dead-letter queues browsed whole (100,000) and searched deep enough (10,000) for a replay, empty
# queues without consumers dropped after 5 minutes (each costs the broker a thread), and a consumer
# that stops reading for 15 s disconnected (else the broker keeps its messages, and its connection
# half-dead, for as long as TCP lets it).
config="$(mktemp)"
cat >"$config" <<'XML'
<!-- Written by tally's crates/tally-queue-activemq/ci.sh -->
<beans
  xmlns="http://www.springframework.org/schema/beans"
  xmlns:amq="http://activemq.apache.org/schema/core"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
  http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">

    <bean class="org.springframework.beans.factory.config.PropertyPlaceholderConfigurer"/>

    <broker xmlns="http://activemq.apache.org/schema/core"
            useJmx="false"
            brokerName="localhost"
            dataDirectory="${activemq.base}/data">

        <destinationPolicy>
            <policyMap>
                <policyEntries>
                    <policyEntry queue=">" maxPageSize="1000"
                                 gcInactiveDestinations="true" inactiveTimoutBeforeGC="300000">
                        <messageGroupMapFactory>
                            <simpleMessageGroupMapFactory/>
                        </messageGroupMapFactory>
                    </policyEntry>
                    <policyEntry queue="*.dead" maxPageSize="10000" maxBrowsePageSize="100000"/>
                </policyEntries>
            </policyMap>
        </destinationPolicy>

        <!-- Messages kept in memory: 40% of the heap (ActiveMQ's default, 70%, leaves the JVM in
             back-to-back full collections once a deep queue fills it); the rest is paged from disk. -->
        <systemUsage>
            <systemUsage>
                <memoryUsage>
                    <memoryUsage percentOfJvmHeap="40"/>
                </memoryUsage>
            </systemUsage>
        </systemUsage>

        <plugins>
            <statisticsBrokerPlugin/>
        </plugins>

        <!-- The journal is synced before a send, commit or receipted ack is confirmed (the defaults);
             the index (rebuilt from the journal after a crash) is written in the background, with a
             cache large enough for deep queues. -->
        <persistenceAdapter>
            <kahaDB directory="${activemq.base}/data/kahadb"
                    indexCacheSize="100000"
                    indexWriteBatchSize="10000"
                    enableIndexWriteAsync="true"/>
        </persistenceAdapter>

        <transportConnectors>
            <transportConnector name="openwire" uri="tcp://127.0.0.1:61616"/>
            <transportConnector name="stomp" uri="stomp://127.0.0.1:61613?transport.soWriteTimeout=15000"/>
        </transportConnectors>

    </broker>

</beans>
XML
changed=0
# A 1 GB heap instead of Debian's 512 MB. An instance's options file replaces the global one
# (/usr/share/activemq/activemq-options) as a whole, so it is that file with the heap changed.
options="$(mktemp)"
{
    echo "# Written by tally's crates/tally-queue-activemq/ci.sh from /usr/share/activemq/activemq-options"
    sed -e 's/-Xms[0-9]*[MmGg] -Xmx[0-9]*[MmGg]/-Xms1G -Xmx1G/' /usr/share/activemq/activemq-options
} >"$options"
grep -q -- '-Xmx1G' "$options" || { echo "ci.sh: could not set the broker's heap in $options" >&2; exit 1; }
if ! cmp -s "$options" "$instance/options"; then
    install -m 0644 "$options" "$instance/options"
    changed=1
fi
rm -f "$options"
if ! cmp -s "$config" "$instance/activemq.xml"; then
    install -m 0644 "$config" "$instance/activemq.xml"
    changed=1
fi
rm -f "$config"
if [ ! -e /etc/activemq/instances-enabled/main ]; then
    ln -s "$instance" /etc/activemq/instances-enabled/main
    changed=1
fi

# The statistics plugin's replies are map messages; STOMP hands them out as JSON (jms-map-json) with
# XStream and Jettison, which Debian installs with ActiveMQ but leaves off the broker's class path.
# (The instance's base directory must stay the broker's: it keeps its data there.)
install -d -o activemq -g activemq /var/lib/activemq/main
install -d /var/lib/activemq/main/lib
for jar in xstream jettison; do
    if [ ! -e "/var/lib/activemq/main/lib/$jar.jar" ]; then
        ln -s "/usr/share/java/$jar.jar" "/var/lib/activemq/main/lib/$jar.jar"
        changed=1
    fi
done

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }
broker_running() { pgrep -u activemq -f 'activemq.jar' >/dev/null; }

if broker_running && [ "$changed" = 1 ]; then
    echo "ci.sh: configuration changed; restarting activemq" >&2
    /etc/init.d/activemq stop >&2 || true
    # The init script waits 2 s only; the new broker must not start before the old one let go of
    # its port and its store.
    for _ in $(seq 1 120); do
        broker_running || break
        sleep 0.5
    done
fi
if ! broker_running; then
    echo "ci.sh: starting activemq" >&2
    /etc/init.d/activemq start >&2 || true
fi
for _ in $(seq 1 120); do
    port_open && break
    sleep 0.5
done
if ! port_open; then
    echo "ci.sh: ActiveMQ's STOMP port $port did not open" >&2
    /etc/init.d/activemq status >&2 || true
    exit 1
fi
echo "ci.sh: ActiveMQ is listening on 127.0.0.1:$port" >&2

if [ "${TALLY_ACTIVEMQ_SKIP_TESTS:-}" = 1 ] || [ "${TALLY_CI_SETUP_ONLY:-}" = 1 ]; then
    exit 0
fi
cd "$here/../.."
cargo test -p tally-queue-activemq --features activemq
