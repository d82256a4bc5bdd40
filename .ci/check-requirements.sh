#!/usr/bin/env bash
# requirements.txt resolves the way Azure installs it: with the pip that a fresh Python 3.11 venv
# brings (not upgraded), and with the newest pip. Needs the package index; a step of .ci/run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="$(command -v python3.11 || command -v python3)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

"$PY" -m venv "$WORK/stock"
echo "check-requirements: $("$WORK/stock/bin/python" -m pip --version) (bundled with $("$PY" --version))"
"$WORK/stock/bin/python" -m pip install --disable-pip-version-check -q --dry-run -r requirements.txt

"$PY" -m venv "$WORK/newest"
"$WORK/newest/bin/python" -m pip install --disable-pip-version-check -q --upgrade pip
echo "check-requirements: $("$WORK/newest/bin/python" -m pip --version)"
"$WORK/newest/bin/python" -m pip install --disable-pip-version-check -q --dry-run -r requirements.txt
echo "check-requirements: requirements.txt resolves with both"
