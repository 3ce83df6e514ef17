#!/usr/bin/env bash
# Builds the libFuzzer target build/fuzz/fuzz_batch (batch_decode and what consumes its
# output) with clang under AddressSanitizer + UndefinedBehaviorSanitizer.
#   bash tests/fuzz/build.sh          build when a source is newer than the binary
#   bash tests/fuzz/build.sh --force  always rebuild
# Needs clang and its libFuzzer runtime (Debian 12: clang-14 with libclang-rt-14-dev, which
# provides libclang_rt.fuzzer-x86_64.a): the "fuzz" section of deps/packages.txt, with the
# "build" section for json-c and uuid; as root it apt-get installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

out=build/fuzz
bin=$out/fuzz_batch
force=0
[ "${1:-}" = "--force" ] && force=1

CC=${FUZZ_CC:-clang}

have_libfuzzer() { # the fuzzer runtime clang would link
  command -v "$CC" >/dev/null 2>&1 || return 1
  local rt
  rt=$("$CC" -print-file-name="lib/linux/libclang_rt.fuzzer-x86_64.a" 2>/dev/null || true)
  [ -n "$rt" ] && [ -f "$rt" ] && return 0
  rt=$("$CC" -print-resource-dir 2>/dev/null || true)
  [ -n "$rt" ] && ls "$rt"/lib/*/libclang_rt.fuzzer*.a >/dev/null 2>&1
}

if ! have_libfuzzer || ! pkg-config --exists json-c uuid; then
  pkgs=$(sh deps/packages.sh fuzz build | tr '\n' ' ')
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "fuzz: installing $pkgs" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $pkgs >/dev/null ||
      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $pkgs >/dev/null; }
  fi
  if ! have_libfuzzer; then
    echo "fuzz: clang with libFuzzer is missing; run: sudo apt-get install $pkgs" >&2
    exit 1
  fi
  pkg-config --exists json-c uuid ||
    { echo "fuzz: json-c or uuid headers missing; run: sudo apt-get install $pkgs" >&2; exit 1; }
fi

srcs=(common/*.c worker/batch.c worker/plan.c worker/result.c)
if [ $force = 0 ] && [ -x "$bin" ] &&
   [ -z "$(find "${srcs[@]}" common/*.h worker/*.h tests/fuzz/fuzz_batch.c tests/fuzz/ref_decode.[ch] tests/fuzz/build.sh \
           -newer "$bin" 2>/dev/null)" ]; then
  exit 0
fi

SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
CFLAGS="-std=c11 -D_DEFAULT_SOURCE -O1 -g -Icommon -Iworker $(pkg-config --cflags json-c uuid)"
LIBS="$(pkg-config --libs json-c uuid)"

rm -rf "$out/obj"
mkdir -p "$out/obj"
objs=()
for s in "${srcs[@]}"; do
  o=$out/obj/$(echo "${s%.c}" | tr / _).o
  # Project code: coverage instrumentation, no libFuzzer main.
  "$CC" $CFLAGS $SAN -fsanitize=fuzzer-no-link -c -o "$o" "$s"
  objs+=("$o")
done
# An archive, so that only the objects the target needs are linked (common/ holds modules
# with other dependencies).
rm -f "$out/libmw.a"
ar rcs "$out/libmw.a" "${objs[@]}"
"$CC" $CFLAGS $SAN -fsanitize=fuzzer -Wall -Wextra -Wshadow -Werror \
  -Itests/fuzz -o "$bin.tmp" tests/fuzz/fuzz_batch.c tests/fuzz/ref_decode.c "$out/libmw.a" $LIBS
mv "$bin.tmp" "$bin"
echo "fuzz: built $bin" >&2
