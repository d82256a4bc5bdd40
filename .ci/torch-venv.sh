#!/usr/bin/env bash
# The PyTorch extra in its own virtual environment, .venv-torch (requirements-torch.txt): what
# `python -m scoring.export` needs to unpickle every published MegaDetector checkpoint. The
# checkpoint tests (tests/test_checkpoints_*.py) build and export with it; mdbatch converts .pt
# files with it. Idempotent: a stamp of requirements-torch.txt skips the install when unchanged.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=".venv-torch"
stamp="$VENV/.mdbatch-stamp"
want="$(sha256sum requirements-torch.txt | cut -c1-16)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then exit 0; fi
echo "setting up the PyTorch extra in $VENV (first run only)..." >&2
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q -r requirements-torch.txt >&2
"$VENV/bin/python" -c "import torch, torchvision, yolov5, ultralytics, yolov9, onnx" >/dev/null
echo "$want" >"$stamp"
