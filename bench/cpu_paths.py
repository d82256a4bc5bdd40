"""Which CPU inference path is fastest with the same boxes? Interleaved rounds, one process.

    .venv/bin/python bench/cpu_paths.py [--model bench/out/scoring/md_random_s6.onnx]
        [--images DIR] [--limit 6] [--rounds 3] [--int8]

Runs each candidate (ONNX Runtime session/threading/graph options, the scorer's inference
streams, OpenVINO's runtime, optionally int8) on the same letterboxed photos, rotating the order
every round so machine load hits all alike, and prints ms per image (median over rounds; it is
throughput, so two streams scoring two images at once count half each) and, per candidate, the
largest raw-output difference and the box parity (pixels / conf over matched boxes) against the
reference, one ONNX Runtime session on every core (the scorer before streams). "identical" means
1 px / 0.001 conf (the bar against MegaDetector). Writes bench/out/cpu_paths.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scoring.engine import Detector, cpu_count  # noqa: E402
from scoring.images import decode_image  # noqa: E402
from scoring.parity import compare  # noqa: E402
from scoring.streams import StreamPool  # noqa: E402

Runner = Callable[[np.ndarray], np.ndarray]
Many = Callable[[list[np.ndarray]], list[np.ndarray]]  # every input, in order; may run them at once


def one_by_one(r: Runner) -> Many:
    return lambda xs: [r(x) for x in xs]


def streams_runner(model: Path) -> Many:
    """The scorer's inference streams (scoring/streams.py): its sessions score different images at
    once, each on its share of the cores, through the engine's own StreamPool."""
    det = Detector(model, provider="cpu")
    if det.streams < 2:
        print("note: one stream on this machine (fewer than two cores)", flush=True)

    def many(xs: list[np.ndarray]) -> list[np.ndarray]:
        with StreamPool(det.sessions) as pool:
            futures = [pool.submit(lambda session, x=x: det.infer(x, session)) for x in xs]
            return [f.result() for f in futures]

    return many


def ort_runner(model: Path, *, level: str = "ALL", threads: int | None = None, spin: bool = False,
               extra: dict[str, str] | None = None) -> Runner:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, f"ORT_ENABLE_{level}")
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads or cpu_count()
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    for k, v in (extra or {}).items():
        so.add_session_config_entry(k, v)
    so.log_severity_level = 3
    s = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return lambda x: s.run(None, {name: x})[0]


def ov_runner(model: Path, hint: str = "LATENCY") -> Runner:
    from scoring.ov_backend import OpenVINOSession

    s = OpenVINOSession(model, cpu_count())
    s._config["PERFORMANCE_HINT"] = hint
    name = s.get_inputs()[0].name
    return lambda x: s.run(None, {name: x})[0]


def int8_model(model: Path, samples: list[np.ndarray]) -> Path:
    """Static QDQ int8 (per-channel weights, uint8 activations) calibrated on ``samples``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = model.with_name(model.stem + ".int8.onnx")
    if out.exists():
        return out
    pre = model.with_name(model.stem + ".pre.onnx")
    quant_pre_process(str(model), str(pre), skip_symbolic_shape=True)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"images": s[None]} for s in samples])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=REPO / "bench" / "out" / "scoring" / "md_random_s6.onnx")
    ap.add_argument("--images", type=Path, default=REPO.parent / "shared" / "testdata" / "camera-traps")
    ap.add_argument("--limit", type=int, default=6, help="photos per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--int8", action="store_true", help="also try static int8 (boxes differ; printed)")
    ap.add_argument("--only", default="", help="comma-separated candidate names")
    a = ap.parse_args()
    if not a.model.is_file():
        print(f"error: model not found: {a.model} (bench/scoring/run.py builds it)", file=sys.stderr)
        return 2
    det = Detector(a.model, provider="cpu")
    photos = sorted(p for p in a.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[: a.limit]
    inputs = []
    for p in photos:
        img = decode_image(p.read_bytes())
        inputs.append((p.name, det.preprocess(img), (img.shape[1], img.shape[0])))
    sizes = {n: wh for n, _, wh in inputs}
    base_name = "ort_all_1stream (reference)"
    cands: dict[str, Callable[[], Many]] = {
        base_name: lambda: one_by_one(ort_runner(a.model)),
        "ort_streams (current)": lambda: streams_runner(a.model),
        "ort_all_spin": lambda: one_by_one(ort_runner(a.model, spin=True)),
        "ort_extended": lambda: one_by_one(ort_runner(a.model, level="EXTENDED")),
        "ort_all_nodenormal": lambda: one_by_one(
            ort_runner(a.model, extra={"session.set_denormal_as_zero": "1"})),
        "openvino_latency": lambda: one_by_one(ov_runner(a.model)),
        "openvino_throughput": lambda: one_by_one(ov_runner(a.model, "THROUGHPUT")),
    }
    if a.int8:
        q = int8_model(a.model, [lb.tensor for _, lb, _ in inputs[:4]])
        cands["ort_int8_qdq (explicit option only)"] = lambda: one_by_one(ort_runner(q))
    if a.only:
        keep = {s.strip() for s in a.only.split(",")}
        cands = {k: v for k, v in cands.items() if k.split(" ")[0] in keep or k == base_name}
    runners = {k: f() for k, f in cands.items()}
    raw: dict[str, list[np.ndarray]] = {}
    for k, r in runners.items():  # warm-up: one run per shape (also the outputs compared)
        raw[k] = r([lb.tensor[None] for _, lb, _ in inputs])
    times: dict[str, list[float]] = {k: [] for k in runners}
    names = list(runners)
    print(f"{len(inputs)} photos x {a.rounds} rounds, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    for rnd in range(a.rounds):
        order = names[rnd % len(names):] + names[: rnd % len(names)]
        for k in order:
            t = time.perf_counter()
            runners[k]([lb.tensor[None] for _, lb, _ in inputs])
            times[k].append((time.perf_counter() - t) / len(inputs) * 1000)
        line = ", ".join(f"{k.split(' ')[0]} {times[k][-1]:.0f}" for k in names)
        print(f"round {rnd + 1}: {line}", flush=True)
    base = names[0]
    base_dets = {n: det.detections(raw[base][i][0], lb.shape, lb.orig_hw, 0.005)
                 for i, (n, lb, _) in enumerate(inputs)}
    rows: list[dict[str, Any]] = []
    for k in names:
        dets = {n: det.detections(raw[k][i][0], lb.shape, lb.orig_hw, 0.005)
                for i, (n, lb, _) in enumerate(inputs)}
        par = compare(base_dets, dets, sizes, conf_tol=0.05, window_px=16)
        med = statistics.median(times[k])
        rows.append({"candidate": k, "ms_per_image_median": round(med, 1),
                     "ms_per_image": [round(t, 1) for t in times[k]],
                     "speed_vs_current": round(statistics.median(times[base]) / med, 3),
                     "max_raw_diff": float(max(np.abs(x - y).max()
                                               for x, y in zip(raw[k], raw[base], strict=True))),
                     "parity_vs_current": par.to_json(),
                     "identical_1px_0.001": par.unmatched == 0 and par.within(1.0, 0.001)})
    print(f"\n{'candidate':40} {'ms/img':>8} {'x current':>9} {'boxes':>6} {'unmatched':>9} {'max px':>7} "
          f"{'max conf':>8} identical")
    for r in rows:
        p = r["parity_vs_current"]
        print(f"{r['candidate']:40} {r['ms_per_image_median']:8.0f} {r['speed_vs_current']:9.2f} "
              f"{p['boxes']:6d} {p['unmatched']:9d} {p['max_box_diff_px']:7.2f} {p['max_conf_diff']:8.4f} "
              f"{r['identical_1px_0.001']}")
    out = REPO / "bench" / "out" / "cpu_paths.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"photos": len(inputs), "rounds": a.rounds, "results": rows,
                               "load_average_1m_end": round(os.getloadavg()[0], 2)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
