#!/usr/bin/env bash
# Fuzzes one target for SECONDS (default 60) under ASan + UBSan:
#   batch (default)  batch_decode and what consumes it (tests/fuzz/fuzz_batch.c, corpus/)
#   api              the API's request path and keys file (tests/fuzz/fuzz_api.c, corpus-api/)
#   bash tests/fuzz/run.sh [batch|api] [SECONDS] [libFuzzer flags...]   e.g. run.sh api 600 -seed=1
# (one process: -jobs/-workers are not supported, their logs go elsewhere)
# Builds the targets when needed, fuzzes a copy of the target's corpus in a temporary
# folder (nothing is written into the repository), and exits non-zero on any crash, leak,
# timeout, sanitizer report or invariant failure, keeping the folder with the reproducer.
# The last line is the summary: executions run and seconds. FUZZ_VERBOSE=1 shows libFuzzer's
# progress as it runs.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
target=batch
case ${1:-} in batch|api) target=$1; shift ;; esac
secs=${1:-60}
[ $# -gt 0 ] && shift
case $secs in ''|*[!0-9]*) echo "usage: $0 [batch|api] [SECONDS] [libFuzzer flags...]" >&2; exit 2 ;; esac
case $target in
  batch) corpus=$here/corpus max_len=65536 ;;
  # fuzz_api's body limit is 16 KiB: room for a few bodies over it, not for long ones.
  api) corpus=$here/corpus-api max_len=32768 ;;
esac

bash "$here/build.sh" || { echo "fuzz: build failed" >&2; exit 1; }
bin=$root/build/fuzz/fuzz_$target

work=$(mktemp -d "${TMPDIR:-/tmp}/mw-fuzz.XXXXXX")
mkdir -p "$work/corpus" "$work/artifacts"
cp "$corpus"/* "$work/corpus/"
log=$work/fuzz.log

export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=1:allocator_may_return_null=0
export UBSAN_OPTIONS=${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}print_stacktrace=1:halt_on_error=1

echo "fuzz: $bin for ${secs}s on a copy of tests/fuzz/$(basename "$corpus") in $work" >&2
start=$(date +%s)
cmd=("$bin" -max_total_time="$secs" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048
     -print_final_stats=1 -dict="$here/json.dict" -artifact_prefix="$work/artifacts/"
     "$@" "$work/corpus")
if [ "${FUZZ_VERBOSE:-0}" = 1 ]; then
  (cd "$work" && "${cmd[@]}") 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
else
  (cd "$work" && "${cmd[@]}") >"$log" 2>&1
  rc=$?
fi
elapsed=$(( $(date +%s) - start ))

stat() { sed -n "s/^stat::$1: *//p" "$log" | awk '{s += $1} END {print s + 0}'; }
execs=$(stat number_of_executed_units)
rate=$(stat average_exec_per_sec)
new=$(stat new_units_added)
rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | sort -n | tail -1)

reports=$(grep -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|SUMMARY: |fuzz_[a-z]+: invariant failed|==[0-9]+== ?ERROR' "$log" || true)
artifacts=$(ls "$work/artifacts" 2>/dev/null || true)

if [ "$rc" -ne 0 ] || [ -n "$reports" ] || [ -n "$artifacts" ] || [ "$execs" -eq 0 ]; then
  [ "${FUZZ_VERBOSE:-0}" = 1 ] || tail -n 60 "$log" >&2
  echo >&2
  echo "fuzz: FAILED (libFuzzer exit status $rc); log: $log" >&2
  for a in $artifacts; do
    echo "  reproducer: $work/artifacts/$a" >&2
    echo "    replay:   $bin $work/artifacts/$a" >&2
    echo "    keep:     cp $work/artifacts/$a $here/crashes/<name>" >&2
  done
  echo "fuzz: $target FAILED after $execs executions in ${elapsed}s"
  exit 1
fi

rm -rf "$work"
echo "fuzz: $target clean: $execs executions in ${elapsed}s (${rate} exec/s, $new new corpus units, peak RSS ${rss:-?} MB)"
