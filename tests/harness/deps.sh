#!/usr/bin/env bash
# Installs what building and testing the worker needs on a fresh Debian machine:
# Debian packages of deps/packages.txt (when root; otherwise it names what is missing) and
# Apache Kafka's broker jars from Maven Central into a cache folder reused by later runs.
# Usage: deps.sh [build|test|all]
#   build     sections build and unit of deps/packages.txt (compilers, -dev packages, cmocka)
#   test      also test and fuzz, the Kafka jars (prints the jars' folder) and tests/deploy's
#             kubernetes-validate (tests/deploy/venv.sh)
#   all       also bench (wrk, for the benchmark's api phase)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
what=${1:-all}

case $what in
  build) sections=(build unit) ;;
  test) sections=(build unit test fuzz) ;;
  all) sections=(build unit test fuzz bench) ;;
  *) echo "usage: $0 [build|test|all]" >&2; exit 2 ;;
esac
mapfile -t pkgs < <(sh "$here/../../deps/packages.sh" "${sections[@]}")
[ ${#pkgs[@]} -gt 0 ] || { echo "deps: no packages read from deps/packages.txt" >&2; exit 1; }

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "deps: missing Debian packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi

[ "$what" = build ] && exit 0

# kubernetes-validate for tests/deploy, in build/venv-deploy (PyPI; kept once made). Not fatal
# here: without it only tests/deploy fails, and it says why.
bash "$here/../deploy/venv.sh" >/dev/null ||
  echo "deps: kubernetes-validate not installed: tests/deploy will fail" >&2

# Kafka broker jars (KRaft), cached so only the first run downloads.
ver=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka-pom.xml")
cache=${MW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/metadata-worker}
libs="$cache/kafka-$ver/libs"
if [ ! -f "$libs/.complete" ]; then
  echo "deps: fetching Apache Kafka $ver from Maven Central into $libs" >&2
  rm -rf "$libs"; mkdir -p "$libs"
  mvn -q -B -f "$here/kafka-pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$libs" -DincludeScope=runtime >&2
  touch "$libs/.complete"
fi
echo "$libs"
