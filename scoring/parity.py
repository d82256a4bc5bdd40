"""Box-for-box comparison of two results files (fp16 vs fp32, OpenVINO vs ONNX Runtime, us vs
MegaDetector): the largest box difference in image pixels and the largest confidence difference.

Why here and not in a test: the benchmarks (bench/gpu.sh, bench/cpu_paths.py) and the tests must
judge parity the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Parity:
    images: int = 0
    boxes: int = 0
    unmatched: int = 0  # boxes with no partner within the match window
    unmatched_near_threshold: int = 0  # of those, ones whose conf is within conf_tol of the threshold
    max_px: float = 0.0
    max_conf: float = 0.0

    def within(self, px: float, conf: float) -> bool:
        """Every box matched (bar ones that a conf change of ``conf`` may lift over the threshold),
        and no matched box further apart than ``px`` pixels / ``conf``."""
        return (self.unmatched == self.unmatched_near_threshold and self.max_px <= px
                and self.max_conf <= conf)

    def to_json(self) -> dict[str, Any]:
        return {"images": self.images, "boxes": self.boxes, "unmatched": self.unmatched,
                "unmatched_near_threshold": self.unmatched_near_threshold,
                "max_box_diff_px": round(self.max_px, 3), "max_conf_diff": round(self.max_conf, 5)}


def compare(ref: dict[str, list[dict[str, Any]] | None], other: dict[str, list[dict[str, Any]] | None],
            sizes: dict[str, tuple[int, int]], threshold: float = 0.005, conf_tol: float = 0.01,
            window_px: float = 8.0, side_slack: float = 0.0) -> Parity:
    """Match each ``ref`` box to the closest unused ``other`` box of the same category.

    ``ref``/``other``: detections by file; ``sizes``: (width, height) by file, to turn normalised
    coordinates into pixels. A pair further apart than ``window_px`` (plus ``side_slack`` times the
    image's longer side: e.g. 1e-4 for one step of the format's 4-decimal truncation) or
    ``conf_tol`` is unmatched.
    """
    p = Parity()
    for name in sorted(set(ref) | set(other)):
        rdets, odets = ref.get(name) or [], other.get(name) or []
        if name not in ref or name not in other:
            p.unmatched += len(rdets) + len(odets)
            continue
        p.images += 1
        w, h = sizes[name]
        window = window_px + side_slack * max(w, h)
        used: set[int] = set()
        for r in rdets:
            p.boxes += 1
            best: tuple[float, float, int] | None = None
            for j, o in enumerate(odets):
                if j in used or o["category"] != r["category"]:
                    continue
                d = max(abs(a - b) * (w if k % 2 == 0 else h)
                        for k, (a, b) in enumerate(zip(r["bbox"], o["bbox"], strict=True)))
                key = (d, abs(r["conf"] - o["conf"]), j)
                if best is None or key < best:
                    best = key
            if best is None or best[0] > window or best[1] > conf_tol:
                p.unmatched += 1
                if r["conf"] < threshold + conf_tol:
                    p.unmatched_near_threshold += 1
                continue
            used.add(best[2])
            p.max_px, p.max_conf = max(p.max_px, best[0]), max(p.max_conf, best[1])
        for j, o in enumerate(odets):
            if j not in used:
                p.unmatched += 1
                if o["conf"] < threshold + conf_tol:
                    p.unmatched_near_threshold += 1
    return p


def detections_by_file(results: dict[str, Any]) -> dict[str, list[dict[str, Any]] | None]:
    return {e["file"]: e.get("detections") for e in results["images"]}
