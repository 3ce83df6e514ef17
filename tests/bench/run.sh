#!/usr/bin/env bash
# `make bench`: builds the worker, starts its own throwaway PostgreSQL + Kafka stack
# (tests/harness/stack.sh, stopped on exit), and runs tests/bench/bench.py, which prints the
# results and writes them to tests/bench/results/ (latest.json/.md; smoke.json/.md for
# --smoke, so that `make test` does not overwrite the full run's figures).
#   run.sh [--items N] [--smoke] [--phases main,curves,backlog,api]
#     phases (default all four, ~17 min): main (the contenders' table), curves (scale curves),
#     backlog (peak RSS, 5M items waiting), api (the HTTP API under wrk); merged into latest.*.
#     --smoke: main only, 50,000 items, quick; non-zero exit on any failure, and when the
#       worker falls below loose floors: worker/naive 4, worker/ceiling 0.2 (--floor-naive,
#       --floor-ceiling; the real targets are judged on the full run)
#   Other options go to bench.py, e.g. --only worker --worker-env TXN_MAX_ITEMS=20000
#   (results then in tests/bench/results/custom.*; see bench.py --help).
set -euo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/../.."
py=/usr/bin/python3   # Debian's, which has python3-confluent-kafka and python3-psycopg2

args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --items) [ $# -ge 2 ] || { echo "run.sh: --items needs a number" >&2; exit 2; }
             args+=(--items "$2"); shift 2 ;;
    --items=*) args+=(--items "${1#--items=}"); shift ;;
    --smoke) args+=(--smoke); shift ;;
    -h|--help) sed -n '2,13p' "$self" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$1"); shift ;;   # more options of bench.py (--only, --worker-env, --seed, ...)
  esac
done

bash tests/harness/deps.sh all >/dev/null || { echo "bench: installing dependencies failed" >&2; exit 1; }
make -s all

stack=$(mktemp -d /tmp/mw-bench.XXXXXX)
cleanup() { bash tests/harness/stack.sh stop "$stack" >/dev/null 2>&1 || true; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
bash tests/harness/stack.sh start "$stack" || { echo "bench: could not start the stack" >&2; exit 1; }
# shellcheck disable=SC1091
. "$stack/env"

$py tests/bench/bench.py "${args[@]}"
