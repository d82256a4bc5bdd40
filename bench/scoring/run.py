"""Benchmark: our ONNX Runtime scorer vs MegaDetector's run_detector_batch, same weights and images.

Run with the project venv: ``.venv/bin/python bench/scoring/run.py [--images DIR] [--repeat N]``.
Creates bench/.peer-venv (MegaDetector + torch, see ../shared/peer-megadetector.md) when missing,
builds a random-weight YOLOv5s6 (3 classes) as a .pt for MegaDetector, exports the same weights
to ONNX for us, runs both, prints images/s, the ratio and the largest box/conf differences.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PEER = REPO / "bench" / ".peer-venv"
PEER_PY = PEER / "bin" / "python"
OUT = REPO / "bench" / "out" / "scoring"
sys.path.insert(0, str(REPO))

from scoring.parity import compare as parity_compare  # noqa: E402  (the repository on the path first)

PEER_PACKAGES = [
    ["torch==2.14.1", "torchvision==0.29.1", "yolov5==7.0.14", "ultralytics==8.4.190",
     "yolov9pip==0.0.4"],
    ["--no-deps", "megadetector==10.0.28"],
    ["jsonpickle", "humanfriendly", "matplotlib", "opencv-python", "requests", "fastquadtree", "scikit-learn",
     "pandas", "python-dateutil", "send2trash", "clipboard", "dill", "pytest", "ruff", "setuptools<82",
     "onnx==1.23.2"],
]


def ensure_peer() -> None:
    if PEER_PY.exists():
        probe = subprocess.run(
            [str(PEER_PY), "-c", "import megadetector, yolov5, ultralytics, yolov9, torch, onnx"],
            capture_output=True)
        if probe.returncode == 0:
            return
    print("creating bench/.peer-venv (MegaDetector, torch; a few minutes) ...", flush=True)
    if not PEER_PY.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER)], check=True)
    for pkgs in PEER_PACKAGES:
        subprocess.run([str(PEER_PY), "-m", "pip", "install", "-q", *pkgs], check=True)


def ensure_model() -> tuple[Path, Path]:
    pt, onnx_path = OUT / "md_random_s6.pt", OUT / "md_random_s6.onnx"
    if not (pt.exists() and onnx_path.exists()):
        subprocess.run([str(PEER_PY), str(Path(__file__).with_name("peer_make_model.py")), str(OUT)],
                       check=True)
    return pt, onnx_path


def run_peer(pt: Path, images: list[str], tag: str, mode: str = "", model_type: str = "yolov5"
             ) -> tuple[float, float, dict[str, list]]:
    """(whole-call seconds, model-load seconds inside that call, detections by file name)."""
    lst = OUT / "images.json"
    lst.write_text(json.dumps(images))
    out = OUT / f"peer_{tag}.json"
    subprocess.run([str(PEER_PY), str(Path(__file__).with_name("peer_run.py")), str(pt), str(lst), str(out),
                    mode or "-", model_type], check=True, stdout=subprocess.DEVNULL)
    data = json.loads(out.read_text())
    return (data["seconds"], data.get("load_seconds", 0.0),
            {Path(r["file"]).name: r.get("detections") for r in data["images"]})


def run_ours(onnx_path: Path, images: list[str], tag: str, provider: str | None = None,
             precision: str = "fp32", streams: int | None = None) -> tuple[float, float, dict[str, list]]:
    """(whole-call seconds, model-load seconds, detections by file name), timed like the peer.

    The model load (ORT session creation, the counterpart of MegaDetector's ``load_detector``) is
    done before ``run`` and timed on its own; the whole call is load + run, as before.
    """
    from scoring.engine import Detector, RunConfig, run

    lst = OUT / "images_ours.json"
    lst.write_text(json.dumps(images))
    out = OUT / f"ours_{tag}.json"
    t0 = time.monotonic()
    det = Detector(onnx_path, provider=provider, precision=precision, streams=streams)
    load = time.monotonic() - t0
    run(RunConfig(model=onnx_path, input=str(lst), output=str(out), checkpoint_every=0), detector=det)
    seconds = time.monotonic() - t0
    data = json.loads(out.read_text())
    return seconds, load, {Path(r["file"]).name: r.get("detections") for r in data["images"]}


def make_copies(src: list[Path], copies: int, folder: Path) -> list[str]:
    """``copies`` distinct-named copies of each photo, so nobody dedups or caches by name."""
    images: list[str] = []
    for r in range(copies):
        for p in src:
            dst = folder / f"c{r}_{p.name}"
            if not dst.exists():
                dst.write_bytes(p.read_bytes())
            images.append(str(dst))
    return images


def rates(n: int, whole_s: float, load_s: float) -> tuple[float, float]:
    """Whole-call img/s and steady-state img/s (model load subtracted)."""
    return round(n / whole_s, 3), round(n / max(whole_s - load_s, 1e-9), 3)


def compare(peer: dict[str, list], ours: dict[str, list], sizes: dict[str, tuple[int, int]]) -> dict:
    """Match each peer box to our closest box of the same category (`scoring.parity`, 4 px /
    0.01 conf window); boxes left over on either side, or on an image only one tool scored, count
    as unmatched."""
    p = parity_compare(peer, ours, sizes, conf_tol=0.01, window_px=4.0)
    return {"images_compared": p.images, "peer_boxes": p.boxes, "unmatched_boxes": p.unmatched,
            "max_box_diff_px": round(p.max_px, 3), "max_conf_diff": round(p.max_conf, 4)}


FAMILIES = ("v5", "spruce", "redwood", "cedar", "larch", "sorrel")


def ensure_family_model(family: str) -> tuple[Path, Path, str]:
    """(checkpoint, ONNX, model type): the test suite's random-weight checkpoint of ``family`` in its
    published layout (tests/checkpoint_fixtures.py, built with the peer venv's libraries), exported
    with ``scoring.export`` in the same venv."""
    from scoring.checkpoints.facts import read_facts
    from tests.checkpoint_fixtures import FAMILIES as LAYOUTS

    folder = OUT / "families" / family
    folder.mkdir(parents=True, exist_ok=True)
    pt = folder / LAYOUTS[family][0]
    if not pt.exists():
        builder = REPO / "tests" / "checkpoint_fixtures.py"
        subprocess.run([str(PEER_PY), str(builder), "build", family, str(pt)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    onnx_path = pt.with_suffix(".onnx")
    if not onnx_path.exists():
        subprocess.run([str(PEER_PY), "-m", "scoring.export", str(pt), "--output", str(onnx_path)], cwd=REPO,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return pt, onnx_path, read_facts(pt).model_type


def run_families(families: list[str], images: list[str], sizes: dict[str, tuple[int, int]]) -> list[dict]:
    """Per family: the same checkpoint through MegaDetector and through us; rates and parity."""
    from tests.checkpoint_fixtures import compare as strict_compare

    rows = []
    for fam in families:
        pt, onnx_path, model_type = ensure_family_model(fam)
        peer_s, peer_load, peer = run_peer(pt, images, fam, model_type=model_type)
        ours_s, ours_load, ours = run_ours(onnx_path, images, fam)
        n = len(images)
        strict = strict_compare({k: v or [] for k, v in peer.items()}, {k: v or [] for k, v in ours.items()},
                                sizes)
        row = {"family": fam, "model_type": model_type, "images": n,
               "boxes_compared": strict["boxes"], "unmatched_1px_0.001": strict["unmatched"],
               "max_box_diff_px": strict["max_px"], "max_conf_diff": strict["max_conf"],
               "megadetector_images_per_s": rates(n, peer_s, peer_load)[0],
               "megadetector_steady_images_per_s": rates(n, peer_s, peer_load)[1],
               "ours_images_per_s": rates(n, ours_s, ours_load)[0],
               "ours_steady_images_per_s": rates(n, ours_s, ours_load)[1],
               "ratio": round(peer_s / ours_s, 2),
               "ratio_steady": round(rates(n, ours_s, ours_load)[1] / rates(n, peer_s, peer_load)[1], 2),
               "load_average_1m": round(os.getloadavg()[0], 2)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="all",
                    help="comma-separated families (v5, spruce, redwood, cedar, larch, sorrel) or 'all' "
                         "(default): each published checkpoint layout, small random weights; 's6': the "
                         "original random YOLOv5s6 run (with --copies, --peer-queue)")
    ap.add_argument("--limit", type=int, default=0, help="score only the first N photos")
    ap.add_argument("--images", type=Path, default=REPO.parent / "shared" / "testdata" / "camera-traps")
    ap.add_argument("--copies", type=int, default=1,
                    help="score the photos N times over (distinct copies in a temp folder, both tools)")
    ap.add_argument("--repeat", type=int, default=1, help="older name for --copies")
    ap.add_argument("--peer-queue", action="store_true", help="also time MegaDetector with its image queue")
    ap.add_argument("--provider", default=None, help="our --provider (cpu, openvino, ...; issue 13)")
    ap.add_argument("--precision", default="fp32", help="our --precision (fp32, fp16; issue 13)")
    ap.add_argument("--streams", type=int, default=None, help="our --streams (default: the engine's choice)")
    ap.add_argument("--one-stream-too", action="store_true",
                    help="also time ours with one stream (the engine before streams) in the same run")
    a = ap.parse_args()
    copies = max(1, a.copies, a.repeat)
    OUT.mkdir(parents=True, exist_ok=True)
    ensure_peer()
    from PIL import Image

    src = sorted(p for p in a.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if a.limit:
        src = src[:a.limit]
    if a.family != "s6":
        fams = list(FAMILIES) if a.family == "all" else a.family.split(",")
        bad = [f for f in fams if f not in FAMILIES]
        if bad:
            ap.error(f"unknown family {bad[0]!r}; choose from {', '.join(FAMILIES)} or all")
        images = [str(p) for p in src]
        sizes = {}
        for p in images:
            with Image.open(p) as im:
                sizes[Path(p).name] = im.size
        print(f"{len(images)} images, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
              f"load average {os.getloadavg()[0]:.2f}", flush=True)
        rows = run_families(fams, images, sizes)
        (OUT / "families.json").write_text(json.dumps(rows, indent=1))
        return 0
    pt, onnx_path = ensure_model()
    with tempfile.TemporaryDirectory(prefix="mdbench-") as tmp:
        images = make_copies(src, copies, Path(tmp)) if copies > 1 else [str(p) for p in src]
        sizes = {}
        for p in images:
            with Image.open(p) as im:
                sizes[Path(p).name] = im.size
        print(f"{len(images)} images ({len(src)} photos x {copies}), {os.cpu_count()} CPUs, "
              f"{platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.2f}")
        peer_s, peer_load, peer = run_peer(pt, images, "default")
        ours_s, ours_load, ours = run_ours(onnx_path, images, "default", a.provider, a.precision, a.streams)
        q = run_peer(pt, images, "queue", "queue") if a.peer_queue else None
        one = (run_ours(onnx_path, images, "one-stream", a.provider, a.precision, 1)
               if a.one_stream_too else None)
    n = len(images)
    peer_whole, peer_steady = rates(n, peer_s, peer_load)
    ours_whole, ours_steady = rates(n, ours_s, ours_load)
    res = {
        "images": n,
        "megadetector_images_per_s": peer_whole,
        "ours_images_per_s": ours_whole,
        "ratio": round(peer_s / ours_s, 2),
        **compare(peer, ours, sizes),
        "copies": copies,
        "ours_provider": a.provider or "default", "ours_precision": a.precision,
        "steady_state_method": "images / (whole-call seconds - model-load seconds measured inside the call: "
                               "MegaDetector's load_detector, our Detector/ORT session creation)",
        "megadetector_load_s": round(peer_load, 2),
        "ours_load_s": round(ours_load, 2),
        "megadetector_steady_images_per_s": peer_steady,
        "ours_steady_images_per_s": ours_steady,
        "ratio_steady": round(ours_steady / peer_steady, 2),
    }
    if q is not None:
        q_s, q_load, _ = q
        q_whole, q_steady = rates(n, q_s, q_load)
        res["megadetector_queue_images_per_s"] = q_whole
        res["ratio_vs_queue"] = round(q_s / ours_s, 2)
        res["megadetector_queue_load_s"] = round(q_load, 2)
        res["megadetector_queue_steady_images_per_s"] = q_steady
        res["ratio_steady_vs_queue"] = round(ours_steady / q_steady, 2)
    if one is not None:
        one_s, one_load, one_dets = one
        res["ours_one_stream_steady_images_per_s"] = rates(n, one_s, one_load)[1]
        res["ours_one_stream_same_detections"] = one_dets == ours
        if q is not None:
            res["ratio_one_stream_steady_vs_queue"] = round(rates(n, one_s, one_load)[1] / q_steady, 2)
    res["ours_streams"] = a.streams or "auto"
    res["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(res, indent=1))
    (OUT / "result.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
