#!/bin/sh
# Makes the hub's SCRAM principals and ACLs (acls.txt) on the broker: the `principals` job
# in docker-compose.yml, after the topics job. Each principal's password is read from
# $SECRETS/<principal>-password (compose secrets) and handed over in a file, never on a
# command line. Idempotent: a principal's credential is replaced, an ACL added twice is
# one ACL. The development broker gets the same plan from dho_devstack::access.
set -eu
BOOTSTRAP="${BOOTSTRAP:-kafka:9092}"
PREFIX="${PREFIX:-dho}"
PLATFORMS="${PLATFORMS:-}"       # direct-publishing platforms, space-separated
SUBSCRIBERS="${SUBSCRIBERS:-}"   # subscriber ids, space-separated
ACLS="${ACLS:-/deploy/kafka/acls.txt}"
SECRETS="${SECRETS:-/run/secrets}"
BIN="${KAFKA_BIN:-/opt/kafka/bin}"

# The plan's lines with the placeholders filled in, one line per platform or subscriber.
expand() {
  grep -v '^[[:space:]]*\(#\|$\)' "$ACLS" | sed "s/{prefix}/$PREFIX/g" | while read -r line; do
    case "$line" in
      *"{platform}"*) for p in $PLATFORMS; do echo "$line" | sed "s/{platform}/$p/g"; done ;;
      *"{subscriber}"*) for s in $SUBSCRIBERS; do echo "$line" | sed "s/{subscriber}/$s/g"; done ;;
      *) echo "$line" ;;
    esac
  done
}

for principal in $(expand | awk '{print $1}' | sort -u); do
  password_file="$SECRETS/$principal-password"
  [ -r "$password_file" ] || { echo "no password for $principal at $password_file" >&2; exit 1; }
  # Through a file only this job can read: a command line is visible to every process.
  config="$(umask 077 && mktemp)"
  printf 'SCRAM-SHA-512=[password=%s]\n' "$(head -n1 "$password_file")" > "$config"
  "$BIN/kafka-configs.sh" --bootstrap-server "$BOOTSTRAP" --alter --entity-type users \
    --entity-name "$principal" --add-config-file "$config" > /dev/null
  rm -f "$config"
done

expand | while read -r principal operation resource pattern name; do
  "$BIN/kafka-acls.sh" --bootstrap-server "$BOOTSTRAP" --add --force \
    --allow-principal "User:$principal" --operation "$operation" \
    --resource-pattern-type "$pattern" "--$resource" "$name" > /dev/null
done
"$BIN/kafka-acls.sh" --bootstrap-server "$BOOTSTRAP" --list
