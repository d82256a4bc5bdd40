"""Fan-out benchmark for the embedded host: N no-op activities from HTTP start to completion.

    .venv/bin/python bench/embedded/bench_fanout.py [--n 1000 10000] [--mode flat|grouped] [--group 500]

Each size runs in a fresh subprocess (so peak RSS is per run) on a fresh state dir, real clock.
Prints wall time (HTTP start -> status Completed), orchestrator episodes and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def one(n: int, mode: str, group: int, workers: int | None) -> dict:
    import requests

    sys.path.insert(0, str(REPO))
    from embedded import EmbeddedHost

    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedHost(HERE / "app", Path(tmp) / "state", workers=workers) as host,
    ):
        payload = {"n": n, "group": group}
        t0 = time.perf_counter()
        r = requests.post(f"{host.base_url}/api/start/{mode}", json=payload, timeout=60)
        r.raise_for_status()
        url = r.json()["statusQueryGetUri"]
        while True:
            s = requests.get(url, timeout=60).json()
            if s["runtimeStatus"] in ("Completed", "Failed", "Terminated"):
                break
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        assert s["runtimeStatus"] == "Completed" and s["output"] == n, s
        return {
            "n": n,
            "mode": mode,
            "group": group if mode == "grouped" else None,
            "wall_s": round(wall, 2),
            "episodes": host.engine.episodes,
            "workers": host.workers,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--mode", choices=["flat", "grouped"], default="flat")
    p.add_argument("--group", type=int, default=500)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(one(a.n[0], a.mode, a.group, a.workers)))
        return 0
    rows = []
    for n in a.n:
        cmd = [sys.executable, __file__, "--child", "--n", str(n), "--mode", a.mode, "--group", str(a.group)]
        if a.workers:
            cmd += ["--workers", str(a.workers)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        row = json.loads(out)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if len(rows) >= 2:
        r = rows[-1]["wall_s"] / max(rows[0]["wall_s"], 1e-9)
        print(f"scaling: {rows[-1]['n'] // rows[0]['n']}x work -> {r:.1f}x time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
