#!/usr/bin/env bash
# Makes build/venv-deploy, a virtualenv of Debian's /usr/bin/python3 holding
# kubernetes-validate (from PyPI: not a Debian package) at the versions of requirements.txt,
# and prints the path of its kubernetes-validate. Idempotent: a venv already holding exactly
# those versions is kept and nothing is downloaded, so it works offline once made.
# Called by tests/deploy/test_kubernetes.py and tests/harness/deps.sh (test, all).
# Exit 1 with one line saying why when it cannot be made (no python3-venv, PyPI unreachable).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${MW_DEPLOY_VENV:-$root/build/venv-deploy}
req=$here/requirements.txt
stamp=$venv/.requirements
kv=$venv/bin/kubernetes-validate

if [ -x "$kv" ] && [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then
  echo "$kv"
  exit 0
fi
rm -rf "$venv"
if ! /usr/bin/python3 -m venv "$venv" >/dev/null 2>&1; then
  echo "venv.sh: /usr/bin/python3 -m venv failed (apt-get install python3-venv)" >&2
  exit 1
fi
if ! "$venv/bin/pip" install --disable-pip-version-check --no-input -q --timeout 20 --retries 2 \
     -r "$req" >"$venv/pip.log" 2>&1; then
  echo "venv.sh: could not install kubernetes-validate from PyPI into $venv" \
       "(is PyPI reachable? pip's last lines follow)" >&2
  tail -n 5 "$venv/pip.log" >&2
  rm -rf "$venv"
  exit 1
fi
cp "$req" "$stamp"
echo "$kv"
