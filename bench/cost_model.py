"""Modelled GPU-hours and cost per million images for common Azure GPU sizes (docs/cost.md).

    .venv/bin/python bench/cost_model.py [--feed-per-core 6.9] > table.md

No GPU was lent to the session that wrote this, so throughput is modelled, not measured:
GPU-bound rate = detector FLOPs per image / (vendor peak x an assumed efficiency), capped by the
feed: (vCPUs - 1) x the feed's measured images/s per core (bench/feed.py, 4000x3000 JPEGs, on
this project's 2-core AMD EPYC dev machine). Every number that is an assumption is named in
ASSUMPTIONS and printed with the table; bench/gpu.sh replaces the model with a measurement on
any machine with a GPU.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

# YOLOv5x6 (MDv5 architecture): GFLOPs at 640x640 as printed by yolov5's model summary
# (bench/gpu_make_model.py builds it); scaled by pixel count to a 1280x960 letterbox (4:3 photo).
GFLOPS_640 = 209.8
GFLOP_PER_IMAGE = GFLOPS_640 * (1280 * 960) / (640 * 640)
START_MIN = 5.0  # node allocation + container start + model load per shard (the figure)
SHARD_SIZES = (2_000, 10_000, 50_000)
FP32_CUDA_CORE_EFFICIENCY = 0.5  # plain fp32 (T4, V100: no TF32): cuDNN reaches about half of peak


@dataclass(frozen=True)
class Size:
    name: str
    gpu: str
    vcpus: int
    fp32_tflops: float  # dense fp32, or TF32 tensor-core dense where the GPU has it (ORT uses TF32)
    fp16_tflops: float  # dense fp16 tensor-core peak
    efficiency: float  # assumed achieved fraction of the tensor-core peaks on YOLOv5x6 convolutions
    usd_per_hour: float  # assumed pay-as-you-go Linux list price, see docs/cost.md
    fp32_tensor: bool = True  # fp32 runs as TF32 on tensor cores (Ampere and later)


SIZES = [
    Size("Standard_NC4as_T4_v3", "T4 16 GB", 4, 8.1, 65.0, 0.15, 0.526, False),
    Size("Standard_NC8as_T4_v3", "T4 16 GB", 8, 8.1, 65.0, 0.15, 0.752, False),
    Size("Standard_NC6s_v3 (retired 2025-09-30)", "V100 16 GB", 6, 14.0, 112.0, 0.25, 3.06, False),
    Size("Standard_NV36ads_A10_v5", "A10 24 GB", 36, 62.5, 125.0, 0.25, 3.20),
    Size("Standard_NC24ads_A100_v4", "A100 80 GB", 24, 156.0, 312.0, 0.25, 3.673),
]
ASSUMPTIONS = [
    f"detector: YOLOv5x6, {GFLOPS_640} GFLOPs at 640x640 -> {GFLOP_PER_IMAGE:.0f} GFLOPs per 1280x960 image",
    "GPU peaks: vendor datasheet dense figures (fp32 or TF32; fp16 tensor cores), not measured",
    "efficiency: 25% of peak (T4: 15%, it clocks down at its 70 W limit); checked against YOLOv5's "
    "published V100 batch-1 fp16 time for x6 at 1280 (26.2 ms, i.e. ~28% of the V100's tensor peak)",
    "fp32 uses TF32 tensor cores on A10/A100/H100 (ONNX Runtime's and PyTorch's default there); on "
    f"T4/V100 plain fp32 at {FP32_CUDA_CORE_EFFICIENCY:.0%} of peak",
    "feed: (vCPUs - 1) x images/s per core of bench/feed.py on 4000x3000 JPEGs (dev machine; Azure's "
    "EPYC/Xeon cores assumed alike); blob reads overlapped with decoding",
    f"start: {START_MIN:g} min per shard (allocation, container, model load), billed like compute",
    "prices: pay-as-you-go Linux list prices (East US) as remembered for 2025, NOT looked up; "
    "replace from the Azure pricing calculator before quoting",
]


def rate(s: Size, precision: str, feed_per_core: float) -> tuple[float, float, float]:
    """(images/s, GPU-bound images/s, feed-bound images/s)."""
    if precision == "fp16":
        eff_tflops = s.fp16_tflops * s.efficiency
    else:
        eff_tflops = s.fp32_tflops * (s.efficiency if s.fp32_tensor else FP32_CUDA_CORE_EFFICIENCY)
    gpu = eff_tflops * 1000 / GFLOP_PER_IMAGE
    feed = (s.vcpus - 1) * feed_per_core
    return min(gpu, feed), gpu, feed


def hours_per_million(r: float, shard: int | None) -> float:
    h = 1e6 / r / 3600
    if shard:
        h += (1e6 / shard) * START_MIN / 60
    return h


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--feed-per-core", type=float, default=6.9,
                    help="our feed, images/s per core on 4000x3000 JPEGs (bench/feed.py)")
    a = ap.parse_args()
    print("| size | GPU | vCPU | precision | img/s (GPU-bound / feed-bound) | GPU-h per 1M, no starts | "
          + " | ".join(f"GPU-h / $ per 1M, shards of {s:,}" for s in SHARD_SIZES) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(SHARD_SIZES))
    for s in SIZES:
        for prec in ("fp32", "fp16"):
            r, g, f = rate(s, prec, a.feed_per_core)
            cells = [f"{hours_per_million(r, n):.1f} h / ${hours_per_million(r, n) * s.usd_per_hour:,.0f}"
                     for n in SHARD_SIZES]
            print(f"| {s.name} | {s.gpu} | {s.vcpus} | {prec} | {r:.1f} ({g:.1f} / {f:.1f}) | "
                  f"{hours_per_million(r, None):.1f} | " + " | ".join(cells) + " |")
    print()
    for x in ASSUMPTIONS:
        print(f"- {x}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
