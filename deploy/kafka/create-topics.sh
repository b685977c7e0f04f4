#!/bin/sh
# Creates the topics in topics.txt (the `topics` job in docker-compose.yml). Idempotent:
# an existing topic is left alone, and the hub's services refuse to start if an input
# topic has another partition count, so a mismatch is loud rather than silent.
set -eu
BOOTSTRAP="${BOOTSTRAP:-kafka:9092}"
REPLICATION="${REPLICATION:-1}"   # one broker here; 3 on a real cluster
TOPICS="${TOPICS:-/deploy/kafka/topics.txt}"
KAFKA_TOPICS="${KAFKA_TOPICS:-/opt/kafka/bin/kafka-topics.sh}"

grep -v '^[[:space:]]*\(#\|$\)' "$TOPICS" | while read -r name partitions cleanup retention; do
  retention_config=""
  if [ "$retention" != "-" ]; then
    retention_config="--config retention.ms=$retention"
  fi
  # shellcheck disable=SC2086 # retention_config is zero or two words on purpose
  "$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
    --topic "$name" --partitions "$partitions" --replication-factor "$REPLICATION" \
    --config "cleanup.policy=$cleanup" $retention_config
done
"$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP" --describe --exclude-internal
