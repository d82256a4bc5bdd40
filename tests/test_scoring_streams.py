"""Inference streams (scoring/streams.py): how the cores are split, that the streams really score
at the same time, and that a run on several streams writes exactly what one stream writes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scoring.engine import Detector, ModelError, RunConfig, run
from scoring.streams import StreamPlan, StreamPool, plan_streams
from tests.scoring_fixtures import (  # noqa: F401
    gradient_image,
    load_results,
    model_dir,
    random_models,
    rect_model,
    save,
)
from tests.test_classify_stage import colour_all, planted  # noqa: F401

SIZES = [(320, 240), (240, 320), (320, 240), (256, 256), (500, 200), (320, 240), (240, 320), (320, 240),
         (100, 700), (320, 240)]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("stream-photos")
    rng = np.random.default_rng(11)
    for i, (w, h) in enumerate(SIZES):
        img = gradient_image(w, h, seed=i).astype(np.int16) + rng.integers(-60, 60, (h, w, 3))
        save(np.clip(img, 0, 255).astype(np.uint8), d / f"p{i:02d}.png")
    return d


@pytest.mark.parametrize(("threads", "streams", "per_stream"), [
    (1, 1, 1), (2, 2, 1), (3, 2, 1), (4, 2, 2), (8, 2, 4), (12, 3, 4), (16, 4, 4), (64, 4, 16)])
def test_default_split(threads: int, streams: int, per_stream: int) -> None:
    assert plan_streams(threads) == StreamPlan(streams, per_stream)


def test_requested_split_and_gpu() -> None:
    assert plan_streams(8, requested=1) == StreamPlan(1, 8)
    assert plan_streams(8, requested=3) == StreamPlan(3, 2)
    assert plan_streams(2, requested=5) == StreamPlan(2, 1)  # never more streams than threads
    assert plan_streams(16, on_gpu=True) == StreamPlan(1, 16)
    with pytest.raises(ValueError, match="--streams"):
        plan_streams(4, requested=0)


def test_bad_streams_is_a_model_error(rect_model: Path) -> None:  # noqa: F811
    with pytest.raises(ModelError, match="--streams must be >= 1"):
        Detector(rect_model, streams=0)


def test_detector_holds_one_session_per_stream(random_models: dict[str, Path]) -> None:  # noqa: F811
    det = Detector(random_models["yolov5"], threads=4, streams=2)
    assert det.streams == 2 and len({id(s) for s in det.sessions}) == 2
    assert det.plan == StreamPlan(2, 2)
    x = np.random.default_rng(0).random((1, 3, 256, 320), dtype=np.float32)
    assert np.array_equal(det.infer(x, det.sessions[0]), det.infer(x, det.sessions[1]))
    assert Detector(random_models["yolov5"], threads=4, streams=1).streams == 1


class _Hooked:
    """A real session with ``before(self)`` called ahead of each ``run`` (a wait, a sleep, a
    failure); everything else is the real session's."""

    def __init__(self, real: Any, before: Callable[[_Hooked], None]) -> None:
        self.real, self.before, self.calls = real, before, 0

    def run(self, names: Any, feed: dict[str, np.ndarray]) -> Any:
        self.calls += 1
        self.before(self)
        return self.real.run(names, feed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.mark.parametrize("layout", ["yolov5", "ultralytics"])
def test_two_streams_score_at_once_and_write_what_one_stream_writes(
        tmp_path: Path, photos: Path, layout: str, random_models: dict[str, Path]) -> None:  # noqa: F811
    model = random_models[layout]
    one = tmp_path / "one.json"
    stats1 = run(RunConfig(model=model, input=str(photos), output=str(one), streams=1, threads=2,
                           progress_every=0))
    assert stats1.extra["streams"] == 1

    det = Detector(model, threads=2, streams=2)
    barrier = threading.Barrier(2)

    def rendezvous(session: _Hooked) -> None:
        """The first call on each session waits for the other stream's first call: a run that
        never scores on two sessions at once fails on the timeout."""
        if session.calls == 1:
            barrier.wait(timeout=30)

    det.sessions = [_Hooked(s, rendezvous) for s in det.sessions]
    two = tmp_path / "two.json"
    stats2 = run(RunConfig(model=model, input=str(photos), output=str(two), progress_every=0), detector=det)
    assert stats2.extra["streams"] == 2 and stats2.scored == len(SIZES)
    assert all(s.calls > 0 for s in det.sessions), "both sessions scored"
    assert load_results(two)["images"] == load_results(one)["images"]
    assert sum(len(e["detections"]) for e in load_results(one)["images"]) > 0


def test_a_failing_stream_fails_the_run_cleanly(tmp_path: Path, photos: Path,
                                               random_models: dict[str, Path]) -> None:  # noqa: F811
    det = Detector(random_models["yolov5"], threads=2, streams=2)
    lock, calls = threading.Lock(), [0]

    def fail_fourth(_: _Hooked) -> None:
        with lock:
            calls[0] += 1
            n = calls[0]
        if n == 4:
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : out of memory")

    det.sessions = [_Hooked(s, fail_fourth) for s in det.sessions]
    out = tmp_path / "r.json"
    with pytest.raises(ModelError, match=r"inference failed on a batch of 1: .*out of memory"):
        run(RunConfig(model=random_models["yolov5"], input=str(photos), output=str(out), progress_every=0),
            detector=det)
    assert not out.exists()


def test_stream_pool_runs_on_every_session() -> None:
    seen: list[str] = []
    started = threading.Barrier(3, timeout=30)

    def job(session: str) -> str:
        started.wait()  # three calls must be running at once on three sessions
        seen.append(session)
        return session

    with StreamPool(["a", "b", "c"]) as pool:
        got = sorted(f.result() for f in [pool.submit(job) for _ in range(3)])
    assert got == ["a", "b", "c"] and sorted(seen) == got


def test_what_a_run_writes_does_not_depend_on_which_stream_finishes_first(
        tmp_path: Path, planted: Path, rect_model: Path, colour_all: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches complete in input order whatever the streams' timing, so the checkpoints hold the
    same images at the same points and the classifier's batches close at the same crops: a run on
    two jittery streams writes what a run on one stream writes, checkpoints included."""
    import scoring.engine as eng

    real_save = eng._Checkpoint.save
    saves: list[list[tuple[str, int]]] = []

    def recording_save(self: Any, entries: dict[str, dict[str, Any]], retry: set[str]) -> None:
        saves[-1].append((",".join(sorted(entries)), sum(
            1 for e in entries.values() for d in e.get("detections") or () if "classifications" in d)))
        real_save(self, entries, retry)

    monkeypatch.setattr(eng._Checkpoint, "save", recording_save)

    def jittery(rng: np.random.Generator, scale: float) -> Callable[[_Hooked], None]:
        """Sleep a seeded random while before each call (longer on one stream): batches finish
        out of submission order."""
        return lambda _: time.sleep(float(rng.random()) * scale)

    outs = []
    for streams, jitter in ((1, 0.0), (2, 0.03), (2, 0.03)):
        saves.append([])
        det = Detector(rect_model, threads=2, streams=streams)
        if jitter:
            det.sessions = [_Hooked(s, jittery(np.random.default_rng(len(saves) * 10 + i),
                                               jitter * (1 + 3 * i)))
                            for i, s in enumerate(det.sessions)]
        out = tmp_path / f"r{len(saves)}.json"
        run(RunConfig(model=rect_model, input=str(planted), output=str(out), classifier=colour_all,
                      checkpoint_every=2, progress_every=0), detector=det)
        outs.append(load_results(out)["images"])
    assert len(saves[0]) >= 3 and saves[0] == saves[1] == saves[2]
    assert outs[0] == outs[1] == outs[2]
    assert any("classifications" in d for e in outs[0] for d in e.get("detections") or ())
