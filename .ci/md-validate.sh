#!/usr/bin/env bash
# Issue 12: MegaDetector's validate_batch_results accepts our results, with and without the
# classification fields (and after the merge). Its own small venv: megadetector --no-deps.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=.tools/md-validate-venv
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --no-deps -r requirements-md-validate.txt
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
.venv/bin/python .ci/md_validate_outputs.py "$OUT" | while read -r f; do
  "$VENV/bin/python" - "$f" <<'PY'
import json, sys
from megadetector.postprocessing.validate_batch_results import ValidateBatchResultsOptions, validate_batch_results
opts = ValidateBatchResultsOptions()
opts.raise_errors = True
validate_batch_results(sys.argv[1], opts)
d = json.load(open(sys.argv[1]))
n = sum("classifications" in det for im in d["images"] for det in im.get("detections") or ())
print(f"valid: {sys.argv[1].rsplit('/', 1)[1]} ({len(d['images'])} images, {n} classified boxes)")
PY
done
