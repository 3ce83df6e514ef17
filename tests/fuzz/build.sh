#!/usr/bin/env bash
# Builds the libFuzzer targets build/fuzz/fuzz_batch (batch_decode and what consumes its
# output) and build/fuzz/fuzz_api (the API's request path and keys file) with clang under
# AddressSanitizer + UndefinedBehaviorSanitizer.
#   bash tests/fuzz/build.sh          build what is out of date (make fuzz-target)
#   bash tests/fuzz/build.sh --force  rebuild everything
# Needs clang and its libFuzzer runtime (Debian 12: clang-14 with libclang-rt-14-dev, which
# provides libclang_rt.fuzzer-x86_64.a): the "fuzz" section of deps/packages.txt, with the
# "build" section for json-c and uuid; as root it apt-get installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

out=build/fuzz
bins="$out/fuzz_batch $out/fuzz_api"
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

# The build itself is the Makefile's (make fuzz-target): the core library built with clang
# under ASan + UBSan and coverage instrumentation, linked with libFuzzer into the target;
# make decides what is out of date from the generated header dependencies.
[ $force = 1 ] && rm -rf "$out"
make -s FUZZ_CC="$CC" fuzz-target >&2
for bin in $bins; do
  [ -x "$bin" ] || { echo "fuzz: $bin was not built" >&2; exit 1; }
done
