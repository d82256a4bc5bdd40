"""How fast does the feed (fetch + decode + EXIF + letterbox + batch assembly) run with no model?

    .venv/bin/python bench/feed.py --null-model [--large] [--copies 3] [--rounds 2]
        [--batch-size 8] [--workers N] [--no-peer]

Ours: the real ``scoring.engine.run`` (thread pool, bounded window, same-shape batches, results
file) with ``Detector.infer`` replaced by an empty prediction, so everything but inference runs.
MegaDetector: its own image queue (``bench/feed_peer.py`` in bench/.peer-venv: its loader
processes and ``preprocess_image``, tensor built as its batch code does), model never run.
Both on the same files, interleaved round by round; images/s and images/s per core (all cores
of the machine are available to both). Ours is timed over the whole ``run`` call; MegaDetector
from the first image out of its queue to the last (its start-up left out, in its favour).
``--large`` adds copies of the photos resized to
4000x3000 (quality 90 JPEG, made once under bench/out/feed/). Writes bench/out/feed/result.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "bench" / "out" / "feed"
PEER_PY = REPO / "bench" / ".peer-venv" / "bin" / "python"
PEER_PT = REPO / "bench" / "out" / "scoring" / "md_random_s6.pt"

from scoring.demo_model import build_random_yolo  # noqa: E402
from scoring.engine import Detector, RunConfig, cpu_count, run  # noqa: E402


def null_detector() -> Detector:
    """A Detector whose inference returns no anchors: the pipeline runs, the model does not."""
    model = OUT / "null.onnx"
    if not model.exists():
        build_random_yolo(model, "yolov5", input_size=1280, stride=64, width=4)
    det = Detector(model, provider="cpu")
    nout = 8

    def infer(batch: np.ndarray, session: object = None) -> np.ndarray:
        return np.zeros((len(batch), 0, nout), np.float32)

    det.infer = infer  # type: ignore[method-assign]
    return det


def large_copies(src: list[Path]) -> list[Path]:
    from PIL import Image

    folder = OUT / "large"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for p in src:
        dst = folder / f"{p.stem}_4000x3000.jpg"
        if not dst.exists():
            with Image.open(p) as im:
                im.convert("RGB").resize((4000, 3000), Image.Resampling.BILINEAR).save(dst, quality=90)
        out.append(dst)
    return out


def run_ours(det: Detector, images: list[str], batch_size: int, workers: int | None) -> float:
    lst = OUT / "list_ours.json"
    lst.write_text(json.dumps(images))
    t = time.monotonic()
    stats = run(RunConfig(model=det.model_path, input=str(lst), output=str(OUT / "ours.json"),
                          batch_size=batch_size, workers=workers, checkpoint_every=0, progress_every=0),
                detector=det)
    seconds = time.monotonic() - t
    assert stats.scored == len(images), stats
    return seconds


def run_peer(images: list[str], mode: str, loaders: int, torch_threads: int | None = None) -> float:
    """MegaDetector's steady rate (first image out of its queue to the last): its process and
    preprocessor start-up is left out, which favours it; ours is timed over the whole call."""
    lst = OUT / "list_peer.json"
    lst.write_text(json.dumps(images))
    env = {**os.environ, **({"MD_TORCH_THREADS": str(torch_threads)} if torch_threads else {})}
    r = subprocess.run([str(PEER_PY), str(REPO / "bench" / "feed_peer.py"), str(PEER_PT), str(lst), mode,
                        str(loaders)], capture_output=True, text=True, check=True, env=env)
    data = json.loads(r.stdout.strip().splitlines()[-1])
    assert data["images"] == len(images), data
    return float(data["steady_images_per_s"])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--null-model", action="store_true", required=True,
                    help="inference replaced by nothing (the only mode: this measures the feed)")
    ap.add_argument("--images", type=Path, default=REPO.parent / "shared" / "testdata" / "camera-traps")
    ap.add_argument("--large", action="store_true", help="also 4000x3000 resized copies")
    ap.add_argument("--copies", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=None, help="our fetch/decode threads (default: engine's)")
    ap.add_argument("--loaders", type=int, default=4, help="MegaDetector loader processes (its default 4)")
    ap.add_argument("--no-peer", action="store_true")
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    src = sorted(p for p in a.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    sets = {"shared": src}
    if a.large:
        sets["large_4000x3000"] = large_copies(src)
    peer = not a.no_peer and PEER_PY.exists() and PEER_PT.exists()
    det = null_detector()
    ncpu = cpu_count()
    res: dict[str, Any] = {"cpus": ncpu, "load_average_1m_start": round(os.getloadavg()[0], 2),
                           "batch_size": a.batch_size, "sets": {}}
    print(f"{ncpu} CPUs, load average {os.getloadavg()[0]:.2f}; peer {'yes' if peer else 'no'}", flush=True)
    for set_name, files in sets.items():
        with tempfile.TemporaryDirectory(prefix="mdfeed-") as tmp:
            images = []
            for c in range(a.copies):
                for p in files:
                    dst = Path(tmp) / f"c{c}_{p.name}"
                    dst.write_bytes(p.read_bytes())
                    images.append(str(dst))
            who_all = ["ours", "md_queue", "md_queue_1thread", "md_queue_preprocess"]
            runs: dict[str, list[float]] = {w: [] for w in who_all}
            for rnd in range(a.rounds):
                order = who_all if rnd % 2 == 0 else who_all[::-1]
                for who in order:
                    if who == "ours":
                        rate = len(images) / run_ours(det, images, a.batch_size, a.workers)
                    elif peer:
                        mode = "queue-preprocess" if who == "md_queue_preprocess" else "queue"
                        rate = run_peer(images, mode, a.loaders, 1 if who == "md_queue_1thread" else None)
                    else:
                        continue
                    runs[who].append(rate)
                    print(f"{set_name} round {rnd + 1} {who}: {rate:.2f} img/s", flush=True)
            row: dict[str, Any] = {"images": len(images)}
            for who, rates in runs.items():
                if rates:
                    med = statistics.median(rates)
                    row[who] = {"images_per_s": [round(r, 2) for r in rates], "median": round(med, 2),
                                "per_core": round(med / ncpu, 2)}
            if "md_queue" in row:
                best_md = max(row[w]["median"] for w in who_all[1:])
                row["ratio_vs_md_best_queue"] = round(row["ours"]["median"] / best_md, 2)
            res["sets"][set_name] = row
    res["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    (OUT / "result.json").write_text(json.dumps(res, indent=1))
    print(f"\n{'set':18} {'ours img/s (/core)':>20} {'MD queue (/core)':>18} {'MD queue 1 thr':>16} "
          f"{'MD queue+pre (/core)':>22} ratio vs best MD")
    for k, r in res["sets"].items():
        def cell(who: str, row: dict[str, Any] = r) -> str:
            return f"{row[who]['median']:.2f} ({row[who]['per_core']:.2f})" if who in row else "-"
        print(f"{k:18} {cell('ours'):>20} {cell('md_queue'):>18} {cell('md_queue_1thread'):>16} "
              f"{cell('md_queue_preprocess'):>22} "
              f"{r.get('ratio_vs_md_best_queue', '-')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
