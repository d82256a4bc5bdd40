"""Fixtures for the service tests: the rect test model, planted camera-trap photos with known
answers, and the settings (environment) an app instance runs with."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scoring.demo_model import box_tolerance, build_rect_model, draw_rect, expected_box, grid_box

MODEL = "test-rects"
INPUT_SIZE = 640
CALLERS = ("alice", "bob")
# (category, box) planted per photo index; index % 4 == 3 stays empty (no detections).
PLANS = [
    [("1", (0.10, 0.10, 0.20, 0.25))],
    [("2", (0.50, 0.40, 0.15, 0.30)), ("3", (0.05, 0.60, 0.25, 0.20))],
    [("1", (0.60, 0.10, 0.30, 0.30)), ("2", (0.10, 0.50, 0.10, 0.20))],
    [],
]


@dataclass(frozen=True)
class Dataset:
    root: Path  # the container folder
    answers: dict[str, list[tuple[str, list[float], float]]]  # file -> [(category, bbox, tolerance)]
    bad: tuple[str, ...]  # files that cannot be decoded

    @property
    def files(self) -> list[str]:
        return sorted([*self.answers, *self.bad])


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("models")
    build_rect_model(d / f"{MODEL}.onnx", input_size=INPUT_SIZE, name=MODEL)
    return d


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory, camera_trap_dir: Path) -> Dataset:
    """The shared photos, downscaled, with rectangles planted; plus one corrupt file and a non-image."""
    root = tmp_path_factory.mktemp("container")
    answers: dict[str, list[tuple[str, list[float], float]]] = {}
    photos = sorted(p for p in camera_trap_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    assert len(photos) >= 10, photos
    for i, p in enumerate(photos):
        img = Image.open(p).convert("RGB")
        img.thumbnail((INPUT_SIZE, INPUT_SIZE))
        arr = np.array(img)
        # Neutralise naturally saturated pixels so that only the planted rectangles answer.
        f = arr.astype(np.int16)
        sat = np.zeros(arr.shape[:2], bool)
        for c in range(3):
            others = np.delete(f, c, axis=2).max(axis=2)
            sat |= (f[..., c] - others) > 100
        arr[sat] = 128
        h, w = arr.shape[:2]
        expected = []
        for cat, box in PLANS[i % len(PLANS)]:
            b = grid_box(w, h, box, input_size=INPUT_SIZE)
            draw_rect(arr, cat, b)
            expected.append((cat, expected_box(w, h, b), box_tolerance(w, h, INPUT_SIZE)))
        name = f"site{i % 3}/cam{i}/{p.stem}.png"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(root / name)
        answers[name] = expected
    (root / "site0" / "broken.jpg").write_bytes(b"this is not a jpeg")
    (root / "site0" / "notes.txt").write_text("not an image")
    return Dataset(root=root, answers=answers, bad=("site0/broken.jpg",))


def check_results(doc: dict, data: Dataset, expect_files: list[str] | None = None) -> None:
    """Every requested image exactly once, sorted; every planted box found; the bad image failed."""
    files = [e["file"] for e in doc["images"]]
    want = sorted(expect_files if expect_files is not None else data.files)
    assert files == want, (files, want)
    assert doc["info"]["format_version"] == "1.6"
    assert doc["detection_categories"] == {"1": "animal", "2": "person", "3": "vehicle"}
    for e in doc["images"]:
        if e["file"] in data.bad:
            assert isinstance(e.get("failure"), str) and not e.get("detections")
            continue
        assert e.get("failure") is None, e
        got = sorted((d["category"], d["bbox"]) for d in e["detections"] if d["conf"] >= 0.5)
        exp = sorted((c, b) for c, b, _ in data.answers[e["file"]])
        assert len(got) == len(exp), (e["file"], got, exp)
        tol = max([t for _, _, t in data.answers[e["file"]]], default=0.01)
        for (gc, gb), (ec, eb) in zip(got, exp, strict=True):
            assert gc == ec, (e["file"], got, exp)
            assert all(abs(g - x) <= tol for g, x in zip(gb, eb, strict=True)), (e["file"], gb, eb, tol)


def service_env(state: Path, model_dir: Path, **extra: str) -> dict[str, str]:
    """Settings for one app instance: local folders, local compute, short polls, small shards."""
    env = {
        "MDBATCH_STATE_DIR": str(state),
        "MDBATCH_MODEL_DIR": str(model_dir),
        "MDBATCH_DEFAULT_MODEL": MODEL,
        "MDBATCH_ALLOW_LOCAL_STORAGE": "true",
        "MDBATCH_COMPUTE_BACKEND": "local",
        "MDBATCH_LOCAL_WORKERS": "2",
        "MDBATCH_SHARD_SIZE": "4",
        "MDBATCH_MAX_IN_FLIGHT": "4",
        "MDBATCH_POLL_INITIAL_S": "0.2",
        "MDBATCH_POLL_MAX_S": "0.5",
        "MDBATCH_MAX_ATTEMPTS": "3",
        "MDBATCH_ACTIVITY_RETRY_S": "0.2",
        "MDBATCH_CALLERS": ",".join(CALLERS),
        "MDBATCH_TASK_HUB": "mdbtest",
        "MDBATCH_SECRETS_BACKEND": "local",
        "AzureWebJobsStorage": str(state / "blob-root"),  # the blob door watches blob-root/CONTAINER
        # callers' local folders: the test data lives in pytest's temporary folders (issue 14)
        "MDBATCH_LOCAL_ROOTS": str(Path(tempfile.gettempdir()).resolve()),
    }
    env.update(extra)
    return env


APP_DIR = Path(__file__).resolve().parents[1]  # the app is the repository root


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())
