#!/bin/sh
# Prints the Debian packages of the named sections of deps/packages.txt, one a line.
#   sh deps/packages.sh build unit      (sections: build unit runtime test bench fuzz)
# POSIX sh and sed only, so that it also runs in the Dockerfile's bookworm-slim stage.
set -eu
list=$(dirname "$0")/packages.txt
[ $# -gt 0 ] || { echo "usage: $0 SECTION..." >&2; exit 2; }
for s in "$@"; do
  grep -q "^$s:" "$list" || { echo "packages: no section '$s' in $list" >&2; exit 2; }
done
for s in "$@"; do
  sed -n "s/#.*//; s/^$s:[[:space:]]*//p" "$list"
done | tr -s ' \t' '\n\n' | sed '/^$/d'
