#!/usr/bin/env bash
# One-shot GPU benchmark: MegaDetector's runner vs ours (fp32, fp16, best batch size) on a
# random-weight MDv5-size (YOLOv5x6) checkpoint and 500 images, nvidia-smi utilisation while ours
# runs, box parity; one JSON (bench/out/gpu/result.json) and one table. Bounded to 8 minutes.
#
#   bash bench/gpu.sh            # full run (a machine with an NVIDIA GPU and onnxruntime-gpu)
#   bash bench/gpu.sh --reduced  # CPU check: yolov5s6, 6 images, GPU parts skipped and said so
#
# OURS_PY: python with the project's scoring deps (default .venv/bin/python, else python3).
# PEER_PY: python with torch + yolov5 + megadetector (default bench/.peer-venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OURS_PY="${OURS_PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
PEER_PY="${PEER_PY:-$( [ -x bench/.peer-venv/bin/python ] && echo bench/.peer-venv/bin/python || echo python3 )}"
LIMIT_S="${GPU_BENCH_LIMIT_S:-470}"
args=()
if [ "${1:-}" = "--reduced" ]; then
  args=(--reduced --arch yolov5s6 --images 6)
  shift
fi
if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu.sh: no nvidia-smi on this machine: GPU parts skipped (ours runs on the CPU)" >&2
else
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2 || true
fi
exec timeout --signal=TERM "$LIMIT_S" "$OURS_PY" bench/gpu_bench.py --peer-python "$PEER_PY" "${args[@]}" "$@"
