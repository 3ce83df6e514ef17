#!/usr/bin/env bash
# `make run`: starts a local PostgreSQL and Kafka broker (tests/harness/stack.sh), applies
# the schema, produces the API's example request, and runs the worker in the foreground
# with its logs on this terminal. Ctrl-C stops the worker cleanly, then the stack.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
stack=${MW_RUN_STACK:-$root/build/local-stack}
bash tests/harness/stack.sh stop "$stack" 2>/dev/null || true
bash tests/harness/stack.sh start "$stack"
# shellcheck disable=SC1091
. "$stack/env"
worker=""
cleanup() {
  [ -n "$worker" ] && kill -INT "$worker" 2>/dev/null && wait "$worker" 2>/dev/null
  echo "make run: stopping the local stack" >&2
  bash tests/harness/stack.sh stop "$stack"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

in=customer-metadata.batches res=customer-metadata.results
build/metadata-worker migrate
tr -d '\n' < schemas/example-request.json | kcat -P -b "$KAFKA_BROKERS" -t "$in"
build/metadata-worker run &
worker=$!

# Show the example ingested: its 5 results and 5 rows.
for _ in $(seq 1 150); do
  n=$( (kcat -C -b "$KAFKA_BROKERS" -t "$res" -o beginning -e -q 2>/dev/null || true) | wc -l)
  [ "$n" -ge 5 ] && break
  sleep 0.2
done
echo
echo "== results on $res:"
kcat -C -b "$KAFKA_BROKERS" -t "$res" -o beginning -e -q -f 'key=%k %s\n'
echo "== rows in customer_metadata:"
psql -X -c "SELECT external_customer_id, external_conversation_id, event_id, status, attributes FROM customer_metadata ORDER BY 1, 2"
cat <<EOT
The worker keeps running (Ctrl-C stops it and the stack). From another terminal:
  produce a batch:  echo '{"items":[{"externalCustomerId":"c1","externalConversationId":"v1","status":"new"}]}' | kcat -P -b $KAFKA_BROKERS -t $in
  read results:     kcat -C -b $KAFKA_BROKERS -t $res -o beginning -e -q
  query the table:  psql "$DATABASE_URL" -c 'SELECT * FROM customer_metadata'
EOT
# MW_RUN_SMOKE=1 (used by make test): stop here, as a Ctrl-C would.
if [ "${MW_RUN_SMOKE:-}" = 1 ]; then
  kill -INT "$worker"; wait "$worker"; rc=$?; worker=""
  echo "make run: worker exited with status $rc"
  exit $rc
fi
wait "$worker"
