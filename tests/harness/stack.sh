#!/usr/bin/env bash
# Starts and stops the throwaway stack the tests and `make run` use: a PostgreSQL
# cluster made with initdb in a temporary folder (its own port and socket, run as a
# non-root user when we are root) and a single-node Apache Kafka broker in KRaft mode.
#   stack.sh start DIR   start both; writes DIR/env (source it for KAFKA_BROKERS, DATABASE_URL, PG*)
#                        The broker also has a SASL_SSL listener (a throwaway CA signed its certificate):
#                        KAFKA_SASL_BROKERS, KAFKA_CA (the CA's PEM), KAFKA_SASL_USER, KAFKA_SASL_PASSWORD,
#                        KAFKA_SASL_MECHANISM (PLAIN; SCRAM-SHA-512 is enabled too, same user).
#   stack.sh stop DIR    stop both and remove DIR
#   stack.sh pg-stop DIR / pg-start DIR / kafka-stop DIR / kafka-start DIR   (fault tests)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cmd=${1:?usage: stack.sh start|stop|pg-start|pg-stop|kafka-start|kafka-stop DIR}
dir=${2:?state folder required}

pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
pguser=$(id -un)
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u "$pguser" -- "$@"; else "$@"; fi; }
[ "$(id -u)" -eq 0 ] && pguser=mwtest

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local t=$1 what=$2; shift 2
  for _ in $(seq 1 $((t * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "stack: $what did not come up within ${t}s" >&2; return 1
}

pg_start() {
  as_pg "$pgbin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/log" -w -t 60 start >/dev/null
}
pg_stop() { as_pg "$pgbin/pg_ctl" -D "$dir/pg/data" -m fast -w stop >/dev/null 2>&1 || true; }

kafka_start() {
  # shellcheck disable=SC1091
  . "$dir/env"
  # Its own session: a Ctrl-C meant for the worker (make run) must not stop the broker.
  (cd "$dir/kafka" && exec setsid java -Xms128m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
      -Dlog4j2.configurationFile="$dir/kafka/log4j2.properties" \
      -cp "$KAFKA_LIBS/*" kafka.Kafka server.properties >"$dir/kafka/log" 2>&1) &
  echo $! >"$dir/kafka/pid"
  wait_for 90 "Kafka broker on $KAFKA_BROKERS" kcat -L -b "$KAFKA_BROKERS" -m 3 -t __probe_metadata
}
kafka_stop() {
  [ -f "$dir/kafka/pid" ] || return 0
  local pid; pid=$(cat "$dir/kafka/pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/kafka/pid"
}

case "$cmd" in
start)
  libs=$(bash "$here/deps.sh" all)
  mkdir -p "$dir/pg" "$dir/kafka/logs"
  dir=$(cd "$dir" && pwd)
  if [ "$(id -u)" -eq 0 ]; then
    id mwtest >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin mwtest
    chown mwtest "$dir/pg"; chmod o+x "$dir"
  fi
  pgport=$(free_port); kport=$(free_port); cport=$(free_port); sport=$(free_port)
  # A second listener whose advertised address is a port nobody listens on until a test's
  # fault proxy does (tests/reliability/faultproxy.py): clients bootstrapped there are sent
  # back to the proxy, never around it.
  xport=$(free_port); pxport=$(free_port)
  as_pg "$pgbin/initdb" -D "$dir/pg/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  # Members of the role mw_password_auth (made by the tests that need it) must give a
  # password: wrong-password and missing-password tests; everyone else is trusted.
  sed -i '1i host all +mw_password_auth 127.0.0.1/32 scram-sha-256' "$dir/pg/data/pg_hba.conf"
  # A self-signed certificate, so that tests can check sslmode=require works by configuration.
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
      -keyout "$dir/pg/data/server.key" -out "$dir/pg/data/server.crt" >/dev/null 2>&1
  chmod 600 "$dir/pg/data/server.key"
  [ "$(id -u)" -eq 0 ] && chown mwtest "$dir/pg/data/server.key" "$dir/pg/data/server.crt"
  cat >>"$dir/pg/data/postgresql.conf" <<CONF
port = $pgport
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir/pg'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 256MB
max_connections = 100
shared_preload_libraries = 'pg_stat_statements'
ssl = on
CONF
  pg_start
  # The SASL_SSL listener's certificates (EC P-256: made in milliseconds): a throwaway CA (2 days) and a broker certificate it
  # signed for 127.0.0.1 (subjectAltName IP:, which librdkafka checks). PEM throughout: the
  # broker reads its key and chain from one PEM file (ssl.keystore.type=PEM, KIP-651; the key
  # in PKCS#8, unencrypted, so no ssl.key.password), so no keytool or JKS is needed.
  tls=$dir/kafka/tls; mkdir -p "$tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=metadata-worker-test-CA \
      -keyout "$tls/ca.key" -out "$tls/ca.pem" >/dev/null 2>&1
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=127.0.0.1 \
      -keyout "$tls/broker.key" -out "$tls/broker.csr" >/dev/null 2>&1
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$tls/broker.ext"
  openssl x509 -req -in "$tls/broker.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
      -CAcreateserial -days 2 -extfile "$tls/broker.ext" -out "$tls/broker.crt" >/dev/null 2>&1
  cat "$tls/broker.key" "$tls/broker.crt" "$tls/ca.pem" >"$tls/broker-keystore.pem"
  chmod 600 "$tls"/*.key "$tls/broker-keystore.pem"
  # One user, worker, with the same password for both mechanisms of the SASL_SSL listener:
  # SCRAM-SHA-512 (created at format time below) and PLAIN (in the listener's JAAS line).
  # PLAIN is what the worker's tests use: librdkafka before 2.6.1 (Debian's 2.0.2) repeats the
  # client nonce in its final SCRAM message, which Kafka 4.x rejects as invalid credentials
  # (docs/operations.md, "Kafka over TLS and SASL").
  # Cost: the certificates take 0.06 s; the listener adds about 1.2 s to each broker start
  # (kafka-start 2.0 s -> 3.25 s on this 2-core machine, 2026-11-30; the same broker without
  # it: 2.0 s), most likely its TLS context being built.
  sasl_password=$(openssl rand -hex 16)
  cat >"$dir/kafka/server.properties" <<CONF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$kport,SASL_SSL://127.0.0.1:$sport,CONTROLLER://127.0.0.1:$cport,PROXIED://127.0.0.1:$xport
advertised.listeners=PLAINTEXT://127.0.0.1:$kport,SASL_SSL://127.0.0.1:$sport,PROXIED://127.0.0.1:$pxport
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT,PROXIED:PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_worker="$sasl_password";
ssl.keystore.type=PEM
ssl.keystore.location=$tls/broker-keystore.pem
ssl.client.auth=none
log.dirs=$dir/kafka/logs
num.partitions=3
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.flush.interval.messages=1000000
CONF
  cat >"$dir/kafka/log4j2.properties" <<CONF
rootLogger.level=WARN
rootLogger.appenderRef.stdout.ref=STDOUT
appender.stdout.type=Console
appender.stdout.name=STDOUT
appender.stdout.layout.type=PatternLayout
appender.stdout.layout.pattern=[%d] %p %m (%c)%n
CONF
  cid=$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
  # The SCRAM user exists from the start (KIP-900): KRaft has no ZooKeeper to add it to later.
  java -cp "$libs/*" kafka.tools.StorageTool format --standalone -t "$cid" \
      -c "$dir/kafka/server.properties" \
      --add-scram "SCRAM-SHA-512=[name=worker,password=$sasl_password]" >"$dir/kafka/format.log" 2>&1
  cat >"$dir/env" <<ENV
export KAFKA_LIBS='$libs'
export KAFKA_BROKERS='127.0.0.1:$kport'
export KAFKA_SASL_BROKERS='127.0.0.1:$sport' KAFKA_CA='$tls/ca.pem'
export KAFKA_SASL_USER='worker' KAFKA_SASL_PASSWORD='$sasl_password' KAFKA_SASL_MECHANISM='PLAIN'
export PGHOST='127.0.0.1' PGPORT='$pgport' PGUSER='postgres' PGDATABASE='postgres'
export DATABASE_URL='postgresql://postgres@127.0.0.1:$pgport/postgres'
export MW_STACK_DIR='$dir'
export KAFKA_PROXIED_LISTENER='127.0.0.1:$xport' KAFKA_PROXY_PORT='$pxport'
ENV
  kafka_start
  echo "stack: PostgreSQL on 127.0.0.1:$pgport, Kafka on 127.0.0.1:$kport (SASL_SSL :$sport) (state in $dir)" >&2
  ;;
stop)
  [ -d "$dir" ] || exit 0
  kafka_stop; [ -d "$dir/pg/data" ] && pg_stop
  rm -rf "$dir"
  ;;
pg-start) pg_start ;;
pg-stop) pg_stop ;;
kafka-start) kafka_start ;;
kafka-stop) kafka_stop ;;
*) echo "stack: unknown command $cmd" >&2; exit 2 ;;
esac
