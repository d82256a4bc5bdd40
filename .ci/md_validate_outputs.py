"""Writes shard results the way the service does (detector + colour classifier, with and without
SpeciesNet's ensemble, and merged) for .ci/md-validate.sh to check with MegaDetector's validator."""

from __future__ import annotations

import io
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from batch.merge import merge_shards  # noqa: E402
from mdbatch.classifiers import resolve  # noqa: E402
from scoring.demo_model import build_rect_model, draw_rect  # noqa: E402
from scoring.engine import RunConfig, run  # noqa: E402


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    det = build_rect_model(out / "models" / "rects.onnx")
    clf = resolve("demo", out / "models").path  # the demo classifier with its ensemble files
    photos = out / "photos"
    photos.mkdir(exist_ok=True)
    for i, p in enumerate(sorted((REPO.parent / "shared" / "testdata" / "camera-traps").glob("*.jpg"))):
        img = np.asarray(Image.open(p).convert("RGB")).copy()
        draw_rect(img, "1" if i % 2 else "3", (0.2, 0.2, 0.3, 0.3))
        Image.fromarray(img).save(photos / f"{p.stem}.png")
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    runs = {"plain": {}, "classified": {"classifier": clf},
            "ensemble": {"classifier": clf, "classifier_options": {"ensemble": True, "country": "USA"}}}
    for name, kw in runs.items():
        run(RunConfig(model=det, input=str(photos), output=str(out / f"{name}.json"), **kw))
    raw = (out / "ensemble.json").read_bytes()
    buf = [io.StringIO() for _ in range(3)]
    manifest = json.dumps({"images": [e["file"] for e in json.loads(raw)["images"]]}).encode()
    merge_shards(1, read_manifest=lambda s: manifest,
                 read_result=lambda s: raw, failed_shards={}, detections_out=buf[0], failed_out=buf[1],
                 images_out=buf[2], now=datetime.now(UTC))
    (out / "merged.json").write_text(buf[0].getvalue())
    print("\n".join(str(out / f"{n}.json") for n in (*runs, "merged")))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
