#!/bin/sh
# One KRaft node. KAFKA_ADVERTISED_HOST is the name clients reach it by (the Service's DNS name);
# data lives in KAFKA_DATA (formatted on first start).
set -eu
: "${KAFKA_ADVERTISED_HOST:?set KAFKA_ADVERTISED_HOST to the Service name clients use}"
DATA="${KAFKA_DATA:-/var/lib/kafka}"
CONF=/tmp/server.properties
cat >"$CONF" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:9093
listeners=PLAINTEXT://0.0.0.0:9092,CONTROLLER://127.0.0.1:9093
advertised.listeners=PLAINTEXT://${KAFKA_ADVERTISED_HOST}:9092
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=${DATA}
num.partitions=3
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
PROPS
set -f  # the classpath's * is Java's wildcard, not the shell's
JAVA="java ${KAFKA_HEAP:--Xms256m -Xmx512m} -XX:+UseG1GC -Djava.awt.headless=true -cp /opt/kafka/libs/*"
if [ ! -f "$DATA/meta.properties" ]; then
  $JAVA kafka.tools.StorageTool format -t "${KAFKA_CLUSTER_ID:-flywheellocalcluster1}" -c "$CONF"
fi
exec $JAVA kafka.Kafka "$CONF"
