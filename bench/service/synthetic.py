"""BENCHMARK ONLY: a compute backend that writes synthetic shard results instantly.

It stands in for the GPU so the benchmark measures the service (planning, fan-out, polling,
aggregation), not the detector. Never used by the app or the tests.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from adapters.compute.base import JobState, JobStatus, ShardJob


def synthetic_image(name: str) -> dict[str, Any]:
    """A plausible result entry: 0-3 boxes, about 2% failures, derived from the name (reproducible)."""
    h = zlib.crc32(name.encode())
    if h % 50 == 0:
        return {"file": name, "failure": "Failure image access", "detections": None}
    dets = []
    for k in range(h % 4):
        v = (h >> (k * 5)) & 0x3FF
        dets.append({"category": str(1 + (v % 3)), "conf": round(0.005 + (v % 995) / 1000, 3),
                     "bbox": [round((v % 97) / 200, 4), round((v % 89) / 200, 4), 0.1234, 0.2345]})
    return {"file": name, "max_detection_conf": max((d["conf"] for d in dets), default=0.0),
            "detections": dets}


def synthetic_result(images: list[str]) -> dict[str, Any]:
    return {
        "info": {"format_version": "1.6", "detector": "synthetic-benchmark",
                 "detector_metadata": {"megadetector_version": "synthetic",
                                       "typical_detection_threshold": 0.2,
                                       "conservative_detection_threshold": 0.05}},
        "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"},
        "images": [synthetic_image(n) for n in sorted(images)],
    }


def _path(url: str) -> Path:
    if not url.startswith("file://"):
        raise ValueError("the synthetic backend works on local folders (file:// URLs) only")
    return Path(unquote(urlsplit(url).path))


class SyntheticInstantCompute:
    """BENCHMARK ONLY. `submit` writes the shard's synthetic result at once; status is SUCCEEDED."""

    def __init__(self) -> None:
        self.submitted = 0

    def submit(self, job: ShardJob) -> str:
        manifest = json.loads(_path(job.manifest_url).read_bytes())
        out = _path(job.output_url)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(synthetic_result(manifest["images"]), separators=(",", ":")))
        tmp.replace(out)
        self.submitted += 1
        return job.name

    def status(self, job_id: str) -> JobStatus:
        return JobStatus(JobState.SUCCEEDED)

    def cancel(self, job_id: str) -> None:
        return None
