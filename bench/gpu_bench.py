"""The one-shot GPU benchmark behind bench/gpu.sh (run that; it sets the pythons and the limit).

MegaDetector's runner vs ours (fp32 and fp16, best batch size) on one random-weight MDv5-size
checkpoint and N images (copies of the shared photos), GPU utilisation sampled with nvidia-smi
while ours runs, box parity (ours fp32 vs MegaDetector: 1 px / 0.001; fp16 vs fp32: 2 px / 0.01).
Without a usable GPU (no nvidia-smi, or no CUDA provider in this ONNX Runtime) the GPU parts are
skipped and said so, and ours runs on the CPU over a few images so every other step is exercised.
Writes bench/out/gpu/result.json and prints one table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "bench" / "out" / "gpu"

from scoring.engine import Detector, RunConfig, run  # noqa: E402
from scoring.images import decode_image  # noqa: E402
from scoring.parity import compare, detections_by_file  # noqa: E402
from scoring.precision import model_for_precision  # noqa: E402


class GpuSampler:
    """nvidia-smi utilisation.gpu / memory.used every 200 ms while a block runs."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            self._proc = subprocess.Popen(
                [
                    "nvidia-smi",
                    "--query-gpu=utilization.gpu,memory.used",
                    "--format=csv,noheader,nounits",
                    "-lms",
                    "200",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                u, m = (float(x) for x in line.split(",")[:2])
                self.samples.append((u, m))
            except ValueError:
                continue

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=5)

    def summary(self) -> dict[str, Any] | None:
        if not self.samples:
            return None
        util = [u for u, _ in self.samples]
        return {
            "samples": len(util),
            "util_mean_pct": round(statistics.mean(util), 1),
            "util_median_pct": statistics.median(util),
            "mem_max_mib": max(m for _, m in self.samples),
        }


def gpu_state() -> dict[str, Any]:
    import onnxruntime as ort

    smi = shutil.which("nvidia-smi")
    name = None
    if smi:
        r = subprocess.run(
            [smi, "--query-gpu=name,driver_version", "--format=csv,noheader"], capture_output=True, text=True
        )
        name = r.stdout.strip() or None
    providers = ort.get_available_providers()
    return {
        "nvidia_smi": bool(smi),
        "gpu": name,
        "ort_version": ort.__version__,
        "ort_providers": providers,
        "usable": bool(name) and "CUDAExecutionProvider" in providers,
    }


def make_images(n: int, folder: Path, src_dir: Path) -> list[str]:
    src = sorted(p for p in src_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    images = []
    for i in range(n):
        p = src[i % len(src)]
        dst = folder / f"c{i // len(src)}_{p.name}"
        if not dst.exists():
            dst.write_bytes(p.read_bytes())
        images.append(str(dst))
    return images


def run_ours(
    model: Path, images: list[str], precision: str, provider: str, batch: int, tag: str
) -> dict[str, Any]:
    lst = OUT / f"list_{tag}.json"
    lst.write_text(json.dumps(images))
    t0 = time.monotonic()
    det = Detector(model, precision=precision, provider=provider)
    load = time.monotonic() - t0
    # no separate warm-up: first-batch costs (cuDNN search per shape) stay in, as for MegaDetector
    with GpuSampler() as smp:
        t1 = time.monotonic()
        stats = run(
            RunConfig(
                model=model,
                input=str(lst),
                output=str(OUT / f"ours_{tag}.json"),
                batch_size=batch,
                checkpoint_every=0,
                progress_every=0,
            ),
            detector=det,
        )
        secs = time.monotonic() - t1
    return {
        "images": stats.scored,
        "failed": stats.failed,
        "seconds": round(secs, 2),
        "load_s": round(load, 2),
        "images_per_s": round(stats.scored / secs, 3),
        "batch_size": batch,
        "precision": precision,
        "provider": det.providers[0],
        "gpu": smp.summary(),
        "output": str(OUT / f"ours_{tag}.json"),
    }


def run_md(peer_py: str, pt: Path, images: list[str], mode: str) -> dict[str, Any]:
    lst = OUT / "list_md.json"
    lst.write_text(json.dumps(images))
    out = OUT / f"md_{mode or 'default'}.json"
    r = subprocess.run(
        [peer_py, str(REPO / "bench" / "scoring" / "peer_run.py"), str(pt), str(lst), str(out), mode],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    data = json.loads(out.read_text())
    n = len(data["images"])
    steady = data["seconds"] - data.get("load_seconds", 0.0)
    return {
        "images": n,
        "seconds": round(data["seconds"], 2),
        "load_s": round(data.get("load_seconds", 0.0), 2),
        "images_per_s": round(n / max(steady, 1e-9), 3),
        "output": str(out),
    }


def by_name(path: str) -> dict[str, Any]:
    return {Path(k).name: v for k, v in detections_by_file(json.loads(Path(path).read_text())).items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--arch", default="yolov5x6")
    ap.add_argument("--batches", default="1,4,8,16", help="batch sizes tried on a subset; best used")
    ap.add_argument("--sweep-images", type=int, default=48)
    ap.add_argument("--peer-python", default=os.environ.get("PEER_PY", ""))
    ap.add_argument("--reduced", action="store_true", help="CPU check: small model, few images, no sweep")
    ap.add_argument("--src", type=Path, default=REPO.parent / "shared" / "testdata" / "camera-traps")
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    state = gpu_state()
    res: dict[str, Any] = {"gpu_state": state, "arch": a.arch, "notes": []}
    if not state["usable"]:
        res["notes"].append(
            "GPU parts skipped: "
            + ("no nvidia-smi" if not state["nvidia_smi"] else "ONNX Runtime has no CUDAExecutionProvider")
        )
    provider = "cuda" if state["usable"] else "cpu"
    peer_py = a.peer_python or sys.executable
    mk = subprocess.run(
        [peer_py, str(REPO / "bench" / "gpu_make_model.py"), str(OUT / "models"), a.arch],
        capture_output=True,
        text=True,
    )
    if mk.returncode != 0:
        print(mk.stderr[-2000:], file=sys.stderr)
        print(
            "error: could not build the checkpoint (needs torch + yolov5 in --peer-python)", file=sys.stderr
        )
        return 2
    models = json.loads(mk.stdout.strip().splitlines()[-1])
    models["onnx_fp16"] = str(model_for_precision(Path(models["onnx"]), "fp16"))
    res["model"] = {k: models[k] for k in ("arch", "params", "seconds")}
    with tempfile.TemporaryDirectory(prefix="mdgpu-") as tmp:
        images = make_images(a.images, Path(tmp), a.src)
        sizes = {}
        for p in {Path(i).name: i for i in images}.values():
            arr = decode_image(Path(p).read_bytes())
            sizes[Path(p).name] = (arr.shape[1], arr.shape[0])
        res["images"] = len(images)
        res["md_default"] = run_md(peer_py, Path(models["pt"]), images, "")
        res["md_queue"] = run_md(peer_py, Path(models["pt"]), images, "queue")
        batches = [int(b) for b in a.batches.split(",")] if state["usable"] and not a.reduced else [1]
        for prec, model in (("fp32", models["onnx"]), ("fp16", models["onnx_fp16"])):
            sweep = {}
            if len(batches) > 1:
                for b in batches:
                    r = run_ours(
                        Path(model), images[: a.sweep_images], prec, provider, b, f"sweep_{prec}_{b}"
                    )
                    sweep[b] = r["images_per_s"]
            best = max(sweep, key=lambda b: sweep[b]) if sweep else batches[0]
            r = run_ours(Path(model), images, prec, provider, best, prec)
            r["batch_sweep_images_per_s"] = sweep
            res[f"ours_{prec}"] = r
    parity = {}
    if "output" in res["md_default"]:
        p = compare(
            by_name(res["md_default"]["output"]), by_name(res["ours_fp32"]["output"]), sizes, conf_tol=0.001
        )
        parity["ours_fp32_vs_md"] = {**p.to_json(), "ok_1px_0.001": p.unmatched == 0 and p.within(1.0, 0.001)}
    p = compare(
        by_name(res["ours_fp32"]["output"]), by_name(res["ours_fp16"]["output"]), sizes, conf_tol=0.01
    )
    parity["ours_fp16_vs_fp32"] = {**p.to_json(), "ok_2px_0.01": p.within(2.0, 0.01)}
    res["parity"] = parity
    res["wall_s"] = round(time.monotonic() - t_start, 1)
    (OUT / "result.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    rows = [
        ("MegaDetector runner", res["md_default"]),
        ("MegaDetector image queue", res["md_queue"]),
        ("ours fp32", res["ours_fp32"]),
        ("ours fp16", res["ours_fp16"]),
    ]
    print(
        "\n| run | img/s (steady) | batch | provider | GPU util mean % | parity |\n|---|---|---|---|---|---|"
    )
    for name, r in rows:
        g = (r.get("gpu") or {}).get("util_mean_pct", "-")
        par = ""
        if name == "ours fp32" and "ours_fp32_vs_md" in parity:
            q = parity["ours_fp32_vs_md"]
            par = (f"vs MD: {q['boxes']} boxes, {q['unmatched']} unmatched, {q['max_box_diff_px']} px, "
                   f"{q['max_conf_diff']}")
        if name == "ours fp16":
            q = parity["ours_fp16_vs_fp32"]
            par = f"vs fp32: {q['unmatched']} unmatched, {q['max_box_diff_px']} px, {q['max_conf_diff']}"
        print(
            f"| {name} | {r.get('images_per_s', r.get('error', '-'))} | {r.get('batch_size', 1)} | "
            f"{r.get('provider', 'torch')} | {g} | {par} |"
        )
    for n in res["notes"]:
        print(f"NOTE: {n}")
    print(f"wall {res['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
