#!/usr/bin/env bash
# `make run`: starts a local PostgreSQL and Kafka broker (tests/harness/stack.sh), applies
# the schema, starts the HTTP API (`metadata-worker api`, with a key made for the run) and the
# worker, sends the reference's example request through the API with curl, and keeps the
# worker in the foreground with its logs on this terminal. Ctrl-C stops both cleanly, then
# the stack. MW_API_ADDR (default 127.0.0.1:8080) moves the API.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
stack=${MW_RUN_STACK:-$root/build/local-stack}
bash tests/harness/stack.sh stop "$stack" 2>/dev/null || true
bash tests/harness/stack.sh start "$stack"
# shellcheck disable=SC1091
. "$stack/env"
worker="" api=""
cleanup() {
  [ -n "$api" ] && kill -TERM "$api" 2>/dev/null && wait "$api" 2>/dev/null
  [ -n "$worker" ] && kill -INT "$worker" 2>/dev/null && wait "$worker" 2>/dev/null
  echo "make run: stopping the local stack" >&2
  bash tests/harness/stack.sh stop "$stack"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

in=customer-metadata.batches res=customer-metadata.results
build/metadata-worker migrate
kcat -b "$KAFKA_BROKERS" -L -t "$in" >/dev/null 2>&1 || true  # the broker creates the topic
# An API key for this run: the secret is printed once; the file keeps its hash.
keyout=$(build/metadata-worker api-key local)
secret=$(echo "$keyout" | sed -n 's/^asapp-api-secret: //p')
echo "$keyout" | grep -v '^[#a]' > "$stack/api-keys"
export API_KEYS_FILE="$stack/api-keys" API_ADDR="${MW_API_ADDR:-127.0.0.1:8080}"
build/metadata-worker api &
api=$!
build/metadata-worker run &
worker=$!
for _ in $(seq 1 100); do  # until the API answers (its /readyz needs the broker)
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://$API_ADDR/metadata-ingestion/v1/many-customer-metadata" || true)
  [ "$code" = 401 ] && break
  sleep 0.1
done
# The reference's request, verbatim but for the address and the key.
curl="curl --request POST --url http://$API_ADDR/metadata-ingestion/v1/many-customer-metadata \\
  --header 'Content-Type: application/json' --header 'asapp-api-id: local' \\
  --header 'asapp-api-secret: $secret' --data @schemas/example-request.json"
echo "== the API's answer to the reference's request:"
curl -sS --request POST --url "http://$API_ADDR/metadata-ingestion/v1/many-customer-metadata" \
  --header 'Content-Type: application/json' --header 'asapp-api-id: local' \
  --header "asapp-api-secret: $secret" --data @schemas/example-request.json
echo

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
The API and the worker keep running (Ctrl-C stops them and the stack). From another terminal:
  call the API:     $curl
  produce a batch:  echo '{"items":[{"externalCustomerId":"c1","externalConversationId":"v1","status":"new"}]}' | kcat -P -b $KAFKA_BROKERS -t $in
  read results:     kcat -C -b $KAFKA_BROKERS -t $res -o beginning -e -q
  query the table:  psql "$DATABASE_URL" -c 'SELECT * FROM customer_metadata'
EOT
# MW_RUN_SMOKE=1 (used by make test): stop here, as a Ctrl-C would.
if [ "${MW_RUN_SMOKE:-}" = 1 ]; then
  kill -TERM "$api"; wait "$api"; arc=$?; api=""
  echo "make run: api exited with status $arc"
  kill -INT "$worker"; wait "$worker"; rc=$?; worker=""
  echo "make run: worker exited with status $rc"
  exit $rc
fi
wait "$worker"
