#!/usr/bin/env bash
# `make test`: installs what is missing, builds the normal and the sanitizer (ASan+UBSan)
# builds, runs the unit tests of both, starts a throwaway PostgreSQL and Kafka broker, runs
# the end-to-end suite against each build, and stops the stack. Prints one summary line.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
py=/usr/bin/python3   # Debian's, which has python3-confluent-kafka and python3-psycopg2

bash tests/harness/deps.sh all >/dev/null || { echo "test: installing dependencies failed" >&2; exit 1; }

passed=0 failed=0 failures=()
step() { # step NAME COMMAND...
  local name=$1; shift
  echo "=== $name"
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("$name"); fi
}

# Sanitizer settings (read by the asan binaries only): any report fails the run.
export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

make -s all unit-build || exit 1
make -s asan >/dev/null || exit 1

unit_tests() { # unit_tests DIR
  local ok=0
  for t in "$1"/tests/test_*; do "$t" || ok=1; done
  return $ok
}
step "unit tests" unit_tests build
step "unit tests (asan)" unit_tests build/asan
# 150 s of fuzzing in all: batch_decode 90 s, the API's request path and keys file 60 s.
step "fuzz batch_decode (90 s, ASan+UBSan)" bash tests/fuzz/run.sh batch 90
step "fuzz the API request path (60 s, ASan+UBSan)" bash tests/fuzz/run.sh api 60
step "command line" $py -m unittest discover -s tests/cli -p 'test_*.py' -v
step "command line (asan)" env MW_BIN="$root/build/asan/metadata-worker" \
  $py -m unittest discover -s tests/cli -p 'test_*.py' -v

stack=$(mktemp -d /tmp/mw-stack.XXXXXX)
trap 'bash tests/harness/stack.sh stop "$stack"' EXIT
bash tests/harness/stack.sh start "$stack" || { echo "test: could not start the stack" >&2; exit 1; }
# shellcheck disable=SC1091
. "$stack/env"

step "end-to-end" env MW_BIN="$root/build/metadata-worker" \
  $py -m unittest discover -s tests/e2e -p 'test_*.py' -v
step "end-to-end (asan)" env MW_BIN="$root/build/asan/metadata-worker" \
  $py -m unittest discover -s tests/e2e -p 'test_*.py' -v
# Faults of docs/contract.md §6 (crashes, outages, scaling, graceful stop) and hostile input;
# they print their figures. The stack's stop/start commands need MW_STACK_DIR (from the env file).
step "reliability" env MW_BIN="$root/build/metadata-worker" \
  $py -m unittest discover -s tests/reliability -p 'test_*.py' -v
# The asan pass leaves out the infrastructure faults (silent network, broker cluster, static
# membership: no worker code path of their own); the normal pass runs everything.
step "reliability (asan)" env MW_BIN="$root/build/asan/metadata-worker" MW_INFRA_FAULTS=0 \
  $py -m unittest discover -s tests/reliability -p 'test_*.py' -v
# deploy/: the Kubernetes manifests (yamllint, kubernetes-validate, references, agreement with
# the code), the alert rules (promtool check/test rules) and the Grafana dashboard, offline (no
# cluster); the metric names they use are checked against a real scrape in the end-to-end
# suite (test_metrics_names.py).
step "deploy: manifests, alert rules, dashboard" \
  $py -m unittest discover -s tests/deploy -p 'test_*.py' -v
if [ -d tests/compose ]; then
  step "containers and schemas" $py -m unittest discover -s tests/compose -p 'test_*.py' -v
fi

# `make run` itself, stopped as soon as it has shown the example ingested: 5 results, 5 rows.
make_run_smoke() {
  local out; out=$(MW_RUN_SMOKE=1 MW_RUN_STACK="$(mktemp -d /tmp/mw-run.XXXXXX)" \
                   bash tests/harness/run-local.sh 2>/dev/null) || return 1
  echo "$out" | grep -v '^{' | head -n 20
  [ "$(echo "$out" | grep -c '^key=.*"error":""')" -eq 5 ] && echo "$out" | grep -q '^(5 rows)$' &&
    echo "$out" | grep -q 'worker exited with status 0'
}
step "make run (smoke: 5 results, 5 rows)" make_run_smoke

# A 50,000-item run of the benchmark, so that `make bench` cannot rot (its own stack); it fails
# when the worker's speed collapses: worker/naive below 4 or worker/ceiling below 0.2 (loose
# floors; the real targets are for `make bench`).
step "benchmark smoke (50,000 items, speed floors)" bash tests/bench/run.sh --smoke

echo
[ $failed -gt 0 ] && echo "failed: ${failures[*]}"
echo "suites: $passed passed, $failed failed"
[ $failed -eq 0 ]
