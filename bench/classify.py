"""What the classification stage adds to a shard's time on this machine's CPU (issue 12).

    .venv/bin/python bench/classify.py [--images 4] [--repeat 1] [--threads N]

Real-size random-weight models, built once into ``bench/out/classify/`` with the PyTorch venv
($MDBATCH_TORCH_PYTHON, else .venv-torch/bin/python): YOLOv5x6 (MegaDetector v5's architecture)
and EfficientNetV2-M at 480 (SpeciesNet v4's family and input size); ``--detector``/``--classifier``
take ready ONNX files instead.

Random detector weights do not find animals, so the two parts are timed on the same photos and put
together, which is also what a shard does (detect every image, then classify the animal crops):

1. detector shard time: the YOLOv5x6 ONNX on N shared photos (``scoring.engine.run``, session made
   before the clock starts), no classifier;
2. classification stage time: the same photos with a planted red rectangle on every other one (so
   half the images have exactly one animal), scored by the rectangle detector with and without the
   EfficientNetV2-M classifier; the difference, minus the classifier session's load (timed apart),
   is what crops + inference cost for those N/2 animals;
3. added = (2) / (1), also with the classifier load spread over a 2,000-image shard.

Prints one JSON line and writes it to ``bench/out/classify/result.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scoring.classifier import Classifier  # noqa: E402
from scoring.demo_model import build_rect_model, draw_rect  # noqa: E402
from scoring.engine import Detector, RunConfig, run  # noqa: E402

OUT = REPO / "bench" / "out" / "classify"
PHOTOS = REPO.parent / "shared" / "testdata" / "camera-traps"


def torch_python() -> str:
    py = os.environ.get("MDBATCH_TORCH_PYTHON") or str(REPO / ".venv-torch" / "bin" / "python")
    if not Path(py).is_file():
        sys.exit(f"no PyTorch interpreter at {py}: set MDBATCH_TORCH_PYTHON, or pass --detector and "
                 "--classifier ONNX files")
    return py


def build(kind: str, path: Path) -> Path:
    if not path.is_file():
        print(f"building the {kind} ({path.name}) with the PyTorch venv...", file=sys.stderr)
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        subprocess.run([torch_python(), str(REPO / "bench" / "classify_models.py"), kind, str(path)],
                       check=True, env=env, cwd=REPO)
    return path


def timed_run(cfg: RunConfig, det: Detector) -> float:
    t0 = time.perf_counter()
    run(cfg, detector=det)
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=4, help="photos in the shard (half get an animal)")
    p.add_argument("--repeat", type=int, default=1, help="time each configuration this many times (best)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    p.add_argument("--detector", type=Path, default=None)
    p.add_argument("--classifier", type=Path, default=None)
    a = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    det_path = a.detector or build("detector", OUT / "md_random_x6.onnx")
    clf_path = a.classifier or build("classifier", OUT / "effv2m_random.onnx")
    rect_path = build_rect_model(OUT / "rects.onnx")

    with tempfile.TemporaryDirectory() as tmp:
        plain, planted = Path(tmp) / "plain", Path(tmp) / "planted"
        photos = sorted(PHOTOS.glob("*.jpg"))[:a.images]
        for i, ph in enumerate(photos):
            img = np.asarray(Image.open(ph).convert("RGB")).copy()
            plain.mkdir(exist_ok=True)
            Image.fromarray(img).save(plain / f"{i:03d}.png")
            if i % 2 == 0:
                draw_rect(img, "1", (0.3, 0.3, 0.3, 0.35))
            planted.mkdir(exist_ok=True)
            Image.fromarray(img).save(planted / f"{i:03d}.png")
        n = len(photos)
        common = {"checkpoint_every": 0, "progress_every": 0.0, "threads": a.threads,
                  "providers": ["CPUExecutionProvider"]}
        big = Detector(det_path, a.threads, ["CPUExecutionProvider"])
        rect = Detector(rect_path, a.threads, ["CPUExecutionProvider"])
        t_load0 = time.perf_counter()
        clf = Classifier(clf_path, providers=["CPUExecutionProvider"], threads=a.threads)
        clf_load = time.perf_counter() - t_load0
        del clf

        def best(cfg: RunConfig, det: Detector) -> float:
            return min(timed_run(cfg, det) for _ in range(a.repeat))

        t_det = best(RunConfig(model=det_path, input=str(plain), output=str(Path(tmp) / "d.json"),
                               **common), big)
        t_rect = best(RunConfig(model=rect_path, input=str(planted), output=str(Path(tmp) / "r.json"),
                                **common), rect)
        t_rect_cls = best(RunConfig(model=rect_path, input=str(planted), output=str(Path(tmp) / "c.json"),
                                    classifier=clf_path, **common), rect)
        res = json.loads((Path(tmp) / "c.json").read_text())
        crops = sum("classifications" in d for im in res["images"] for d in im["detections"])
    stage = max(0.0, t_rect_cls - t_rect - clf_load)
    per_image_det = t_det / n
    result = {
        "images": n, "animal_images": crops, "threads": a.threads or os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "detector": det_path.name, "classifier": clf_path.name,
        "detector_shard_s": round(t_det, 2), "detector_s_per_image": round(per_image_det, 3),
        "classify_stage_s": round(stage, 2), "classify_s_per_crop": round(stage / max(crops, 1), 3),
        "classifier_load_s": round(clf_load, 2),
        "added_fraction": round(stage / t_det, 4),
        "added_fraction_2000_image_shard_with_load": round(
            (stage / n * 2000 + clf_load) / (per_image_det * 2000), 4),
    }
    line = json.dumps(result)
    print(line)
    (OUT / "result.json").write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
