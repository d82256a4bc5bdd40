#!/usr/bin/env bash
# Every pin of the Azure ML job environment (infra/aml/conda.yml) exists on the package index as a
# wheel for the job's platform: linux x86_64 with the image's glibc (Ubuntu 22.04: 2.35) and the
# environment's Python. Then the whole set, extras included, resolves for that platform.
# Needs the package index; a step of .ci/run (tests stay offline).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CONDA="${1:-infra/aml/conda.yml}"
PIP=(python3 -m pip)
[[ -x .venv/bin/python ]] && PIP=(.venv/bin/python -m pip)
PYVER="$(sed -n 's/^ *- python=\([0-9.]*\).*/\1/p' "$CONDA")"
[[ -n "$PYVER" ]] || { echo "check-aml-pins: no python=X.Y in $CONDA"; exit 1; }
mapfile -t PINS < <(sed -n 's/^ \{6\}- \([A-Za-z0-9_.\[,\-]*\]\{0,1\}==[^ #]*\).*/\1/p' "$CONDA")
[[ ${#PINS[@]} -gt 0 ]] || { echo "check-aml-pins: no pip pins found in $CONDA"; exit 1; }
# pip matches --platform tags exactly: list every manylinux tag a glibc 2.35 system accepts
PLATFORMS=()
for minor in $(seq 35 -1 17); do PLATFORMS+=(--platform "manylinux_2_${minor}_x86_64"); done
PLATFORMS+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
COMMON=(--disable-pip-version-check -q --only-binary=:all: --python-version "$PYVER" "${PLATFORMS[@]}")
failed=0
for pin in "${PINS[@]}"; do
  if "${PIP[@]}" download --no-deps -d "$WORK/wheels" "${COMMON[@]}" "$pin" >"$WORK/log" 2>&1; then
    echo "check-aml-pins: ok      $pin"
  else
    echo "check-aml-pins: MISSING $pin (no linux x86_64 wheel for Python $PYVER)"; grep -i error "$WORK/log" | head -3
    failed=1
  fi
done
[[ $failed == 0 ]] || exit 1
# the set with its dependencies (the extras pull the CUDA/cuDNN wheels): one consistent resolution
"${PIP[@]}" install --dry-run --ignore-installed --target "$WORK/target" "${COMMON[@]}" "${PINS[@]}" >"$WORK/log" 2>&1 \
  || { echo "check-aml-pins: the environment does not resolve for linux x86_64 / Python $PYVER"; tail -5 "$WORK/log"; exit 1; }
echo "check-aml-pins: ${#PINS[@]} pins exist for linux x86_64 / Python $PYVER and resolve together"
