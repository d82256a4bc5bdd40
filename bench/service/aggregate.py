"""Aggregation: our streaming merge vs megadetector's combine_batch_output_files, same shard files.

    .venv/bin/python -m bench.service.aggregate --images 200000 --shard-size 2000

Each side runs in a fresh process that reports its wall time and peak RSS (ru_maxrss), so the
numbers include the interpreter; the peer runs in bench/.peer-venv. Both read the same shard files
from a local folder and write one merged file to that folder.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PEER_PY = ROOT / "bench" / ".peer-venv" / "bin" / "python"


def make_shards(folder: Path, images: int, shard_size: int) -> int:
    from bench.service.synthetic import synthetic_result

    shards = (images + shard_size - 1) // shard_size
    d = folder / "req" / "shards"
    d.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        names = [f"cam{s:05d}/site{s % 7}/IMG_{k:06d}.JPG" for k in range(shard_size)
                 if s * shard_size + k < images]
        (d / f"{s:05d}.manifest.json").write_text(json.dumps({"format": "mdbatch-shard/1", "images": names}))
        (d / f"{s:05d}.result.json").write_text(json.dumps(synthetic_result(names), indent=1))
    return shards


OURS = """
import json, resource, sys, time
from pathlib import Path
t0 = time.perf_counter()
from activities import steps, services as sv
from adapters.storage import LocalStore
folder, shards = Path(sys.argv[1]), int(sys.argv[2])
work = LocalStore(folder)
out = LocalStore(folder / "out-ours")
svc = sv.Services(settings=None, work=work, output=out, secrets=None, compute=None)
counts = steps.aggregate(svc, {"request_id": "req", "shards": shards, "failed": {}}, tmp_dir=str(folder))
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "images": counts["images"]}))
"""

PEER = """
import json, resource, sys, time
from pathlib import Path
t0 = time.perf_counter()
from megadetector.postprocessing.combine_batch_outputs import combine_batch_output_files
folder, shards = Path(sys.argv[1]), int(sys.argv[2])
files = [str(folder / "req" / "shards" / f"{s:05d}.result.json") for s in range(shards)]
d = combine_batch_output_files(files, str(folder / "peer.json"), verbose=False)
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "images": len(d["images"])}))
"""


def run(py: str, code: str, folder: Path, shards: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([py, "-c", code, str(folder), str(shards)], capture_output=True, text=True,
                         env=env, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=200_000)
    ap.add_argument("--shard-size", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    if not PEER_PY.exists():
        sys.exit(f"the peer venv is missing: {PEER_PY} (see ../shared/peer-megadetector.md)")
    with tempfile.TemporaryDirectory(prefix="mdb-bench-agg-") as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        shards = make_shards(folder, a.images, a.shard_size)
        size = sum(p.stat().st_size for p in (folder / "req" / "shards").glob("*.result.json"))
        print(f"{shards} shard files, {size / 1e6:.0f} MB, made in {time.perf_counter() - t:.1f} s")
        def best(py: str, code: str) -> dict:
            return min((run(py, code, folder, shards) for _ in range(a.repeat)), key=lambda r: r["seconds"])

        ours = best(sys.executable, OURS)
        peer = best(str(PEER_PY), PEER)
        assert ours["images"] == peer["images"] == a.images, (ours, peer)
        ours_doc = json.loads((folder / "out-ours" / "req" / "detections.json").read_text())
        peer_doc = json.loads((folder / "peer.json").read_text())
        same = [e["file"] for e in ours_doc["images"]] == sorted(e["file"] for e in peer_doc["images"])
        print(json.dumps({"images": a.images, "shards": shards, "ours": ours, "peer": peer,
                          "speedup": round(peer["seconds"] / ours["seconds"], 2),
                          "memory_ratio": round(ours["peak_rss_mb"] / peer["peak_rss_mb"], 3),
                          "same_files": same,
                          "machine": f"{os.cpu_count()} cores, resource: {resource.getpagesize()} B pages"},
                         indent=1))


if __name__ == "__main__":
    main()
