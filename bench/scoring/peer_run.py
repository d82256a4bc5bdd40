"""Runs in bench/.peer-venv: MegaDetector's own batch runner on an image list, timed."""

import json
import sys
import time
from pathlib import Path

from megadetector.detection.run_detector_batch import load_and_run_detector_batch

model, image_list, out_json = sys.argv[1:4]
use_queue = len(sys.argv) > 4 and sys.argv[4] == "queue"
images = json.loads(Path(image_list).read_text())
t0 = time.monotonic()
results = load_and_run_detector_batch(model, images, confidence_threshold=0.005, quiet=True,
                                      detector_options={"model_type": "yolov5"},
                                      use_image_queue=use_queue)
seconds = time.monotonic() - t0
Path(out_json).write_text(json.dumps({"seconds": seconds, "images": results}, default=str))
print(f"megadetector: {len(results)} images in {seconds:.2f}s")
