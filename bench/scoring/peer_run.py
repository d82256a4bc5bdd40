"""Runs in bench/.peer-venv: MegaDetector's own batch runner on an image list, timed.

Writes ``seconds`` (the whole ``load_and_run_detector_batch`` call, model loading included) and
``load_seconds`` (time spent inside its ``load_detector`` call in this process, i.e. building the
model the scoring loop uses), so the caller can report a steady-state rate excluding model load.
"""

import json
import os
import sys
import time
from pathlib import Path

import megadetector.detection.run_detector_batch as rdb

model, image_list, out_json = sys.argv[1:4]
use_queue = len(sys.argv) > 4 and sys.argv[4] == "queue"
model_type = sys.argv[5] if len(sys.argv) > 5 else "yolov5"  # what MegaDetector infers for the file
images = json.loads(Path(image_list).read_text())

_load_detector = rdb.load_detector
_main_pid = os.getpid()
load_seconds: list[float] = []


def _timed_load_detector(*args, **kwargs):
    """Time the scoring process's model load (queue producers may call it in child processes)."""
    t = time.monotonic()
    det = _load_detector(*args, **kwargs)
    if os.getpid() == _main_pid:
        load_seconds.append(time.monotonic() - t)
    return det


rdb.load_detector = _timed_load_detector  # looked up as a module global by the runner
t0 = time.monotonic()
results = rdb.load_and_run_detector_batch(model, images, confidence_threshold=0.005, quiet=True,
                                          detector_options={"model_type": model_type},
                                          use_image_queue=use_queue)
seconds = time.monotonic() - t0
Path(out_json).write_text(json.dumps({"seconds": seconds, "load_seconds": sum(load_seconds),
                                      "images": results}, default=str))
print(f"megadetector: {len(results)} images in {seconds:.2f}s (model load {sum(load_seconds):.2f}s)")
