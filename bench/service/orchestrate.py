"""End to end at scale on the embedded host with the BENCHMARK-ONLY synthetic compute backend.

    .venv/bin/python -m bench.service.orchestrate --images 10000 --shard-size 2000
    .venv/bin/python -m bench.service.orchestrate --images 1000000 --shard-size 2000 --window 64

The images are empty files in a local folder (listing is real); every shard result is synthetic,
so the numbers are the service's own cost: plan + fan-out + polling + aggregate + publish.
Peak RSS is the whole process (host + app + activities), from ru_maxrss.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]


def make_images(root: Path, n: int) -> None:
    per = 1000
    for d in range((n + per - 1) // per):
        folder = root / f"cam{d:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(min(per, n - d * per)):
            (folder / f"IMG_{k:05d}.JPG").touch()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--shard-size", type=int, default=2000)
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--poll", type=float, default=0.05)
    a = ap.parse_args()
    from activities import services as sv
    from bench.service.synthetic import SyntheticInstantCompute
    from embedded import EmbeddedHost

    with tempfile.TemporaryDirectory(prefix="mdb-bench-orch-") as tmp:
        t = Path(tmp)
        t0 = time.perf_counter()
        body = {"input_container_sas": (t / "images").as_uri()}
        if a.images <= 100_000:
            make_images(t / "images", a.images)  # a real listing
        else:  # a million files would take minutes to create: an image list names them instead
            (t / "images").mkdir()
            names = [f"cam{i // 1000:05d}/IMG_{i % 1000:05d}.JPG" for i in range(a.images)]
            (t / "list.json").write_text(json.dumps(names))
            del names
            body["images_requested_json_sas"] = (t / "list.json").as_uri()
        made = time.perf_counter() - t0
        (t / "models").mkdir()
        (t / "models" / "synthetic.onnx").touch()  # local compute offers installed models only
        env = {
            "MDBATCH_MODEL_DIR": str(t / "models"),
            "MDBATCH_STATE_DIR": str(t / "state"), "MDBATCH_ALLOW_LOCAL_STORAGE": "true",
            "MDBATCH_DEFAULT_MODEL": "synthetic", "MDBATCH_SHARD_SIZE": str(a.shard_size),
            "MDBATCH_MAX_IN_FLIGHT": str(a.window), "MDBATCH_POLL_INITIAL_S": str(a.poll),
            "MDBATCH_POLL_MAX_S": str(a.poll), "MDBATCH_TASK_HUB": "bench", "MDBATCH_MAX_IMAGES": "4000000",
            "AzureWebJobsStorage": str(t / "blob-root"),
        }
        with EmbeddedHost(ROOT, t / "host", workers=4, env=env) as host:
            synthetic = SyntheticInstantCompute()
            sv.override(compute=synthetic)
            t1 = time.perf_counter()
            r = requests.post(f"{host.base_url}/api/detections", timeout=60,
                              json=body)
            r.raise_for_status()
            url = r.json()["statusQueryGetUri"]
            while True:
                doc = requests.get(url, timeout=60).json()
                if doc["runtimeStatus"] in ("Completed", "Failed", "Terminated"):
                    break
                time.sleep(0.2)
            wall = time.perf_counter() - t1
            sv.override(compute=None)
        out = doc.get("output") or {}
        print(json.dumps({
            "images": a.images, "shard_size": a.shard_size, "window": a.window,
            "status": doc["runtimeStatus"],
            "result_images": out.get("images") if isinstance(out, dict) else out,
            "shards_submitted": synthetic.submitted, "wall_s": round(wall, 2),
            "make_images_s": round(made, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "cpus": os.cpu_count(),
        }, indent=1))


if __name__ == "__main__":
    main()
