"""Local compute: the real scorer as child processes; a host crash mid-shard; restart; re-run once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from adapters_fixtures import AZURITE_KEY, make_settings, new_container
from azure.storage.blob import generate_container_sas

from adapters.backends import compute_from_settings, secrets_from_settings
from adapters.compute import JobState, ShardJob
from adapters.compute.local import LocalComputeBackend
from adapters.secrets import park_url, unpark
from adapters.settings import Settings
from adapters.storage import validate_input_location
from scoring.demo_model import build_rect_model

PHOTOS = ["channel-islands-thumb.jpg", "idaho-camera-traps.jpg", "pheasant_web.jpg", "sample-arc-01.jpg",
          "sample-cfz-01.jpg", "sample-dzf-01.jpg"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, camera_trap_dir: Path) -> tuple[Settings, Path]:
    """A state dir with the rectangle test model and a folder of 120 real photos (20 x 6 links)."""
    root = tmp_path_factory.mktemp("local-compute")
    settings = replace(make_settings(root), local_workers=2)
    build_rect_model(settings.models_path / "test-rects.onnx", input_size=640)
    images = root / "images"
    for i in range(20):
        (images / f"cam{i:02d}").mkdir(parents=True)
        for p in PHOTOS:
            try:
                os.link(camera_trap_dir / p, images / f"cam{i:02d}" / p)
            except OSError:  # another file system: copy
                shutil.copy(camera_trap_dir / p, images / f"cam{i:02d}" / p)
    return settings, images


def _shard(settings: Settings, images: Path, shard: int, names: list[str], request_id: str) -> ShardJob:
    work = settings.state_dir / "work" / request_id
    manifest = work / "shards" / f"{shard:05d}.json"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"format": "mdbatch-shard/1", "request_id": request_id, "shard": shard,
                                    "source": {"url": images.as_uri(), "secret_ref": None},
                                    "images": sorted(names)}))
    return ShardJob(request_id=request_id, shard=shard, attempt=1, manifest_url=manifest.as_uri(),
                    output_url=(work / "results" / f"{shard:05d}.json").as_uri(), model="test-rects",
                    threshold=0.1, checkpoint_every=2)


def _all_names(images: Path) -> list[str]:
    return sorted(p.relative_to(images).as_posix() for p in images.rglob("*.jpg"))


def _wait(cond: object, timeout: float = 150.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _result(job: ShardJob) -> dict:
    return json.loads(Path(job.output_url.removeprefix("file://")).read_text())


def test_crash_restart_reruns_dead_job_once(setup: tuple[Settings, Path]) -> None:
    settings, images = setup
    names = _all_names(images)
    big = _shard(settings, images, 0, names, "crash0001")                 # 120 images: the one we kill
    small = _shard(settings, images, 1, names[:3], "crash0001")
    queued = _shard(settings, images, 2, names[3:6], "crash0001")        # waits for a free slot
    host_a = compute_from_settings(settings)
    assert isinstance(host_a, LocalComputeBackend)
    ids = [host_a.submit(j) for j in (big, small, queued)]
    assert ids == [big.name, small.name, queued.name]
    assert host_a.submit(big) == big.name  # idempotent: still one record, one process
    assert host_a.status(queued.name).state == JobState.QUEUED

    checkpoint = Path(big.output_url.removeprefix("file://") + ".checkpoint.json")
    _wait(checkpoint.exists, what="the big shard's first checkpoint")
    rec = host_a.record(big.name)
    assert rec is not None and rec["state"] == "running" and rec["runs"] == 1
    pid = rec["pid"]
    # The host "crashes": it stops watching, and the machine takes the scorer down with it.
    host_a.close()
    os.killpg(pid, signal.SIGKILL)
    assert not Path(big.output_url.removeprefix("file://")).exists()

    host_b = compute_from_settings(settings)  # the restarted host, same state dir
    try:
        _wait(lambda: all(host_b.status(j.name).state != JobState.QUEUED for j in (big, queued)),
              what="restart to pick up jobs")
        _wait(lambda: all(host_b.status(j.name).done for j in (big, small, queued)), what="all jobs")
        for j in (big, small, queued):
            assert host_b.status(j.name).state == JobState.SUCCEEDED, host_b.record(j.name)
        assert host_b.record(big.name)["runs"] == 2  # re-run exactly once
        assert host_b.record(small.name)["runs"] == 1 and host_b.record(queued.name)["runs"] == 1
        out = _result(big)
        files = [im["file"] for im in out["images"]]
        assert files == names  # every image once, none twice, sorted
        assert all(im.get("detections") == [] for im in out["images"])  # real photos: no pure rects
        log = (settings.state_dir / "compute" / "logs" / f"{big.name}.err").read_text()
        assert "resumed 0 " not in log.splitlines()[-1]  # the second run resumed from the checkpoint
        assert [im["file"] for im in _result(small)["images"]] == names[:3]
        # a later submit of the same attempt neither re-runs nor changes the outcome
        assert host_b.submit(big) == big.name and host_b.record(big.name)["runs"] == 2
    finally:
        host_b.close(kill_children=True)  # type: ignore[attr-defined]


def test_cancel_kills_process_group_and_env_carries_secrets_file(setup: tuple[Settings, Path]) -> None:
    settings, images = setup
    names = _all_names(images)
    job = _shard(settings, images, 0, names, "cancel001")
    failing = replace(_shard(settings, images, 1, names[:2], "cancel001"), model="no-such-model")
    host = compute_from_settings(replace(settings, local_workers=1))
    assert isinstance(host, LocalComputeBackend)
    try:
        host.submit(job)
        host.submit(failing)
        _wait(lambda: host.status(job.name).state == JobState.RUNNING, what="running")
        pid = host.record(job.name)["pid"]
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert f"MDBATCH_SECRETS_FILE={settings.secrets_path.absolute()}".encode() in environ
        assert not any(b"secrets" in arg or b"sig=" in arg for arg in cmdline)
        assert cmdline[1:3] == [b"-m", b"scoring"] and os.getpgid(pid) == pid  # own process group

        host.cancel(job.name)
        host.cancel(job.name)  # idempotent
        assert host.status(job.name).state == JobState.CANCELLED
        _wait(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
              .rsplit(")", 1)[1].split()[0], what="the process group to end")
        _wait(lambda: host.status(failing.name).done, what="the next queued job to run and fail")
        st = host.status(failing.name)
        assert st.state == JobState.FAILED and st.reason and "no-such-model" in st.reason
        assert host.status(job.name).state == JobState.CANCELLED
        assert host.status("mdb-unknown0-s00000-a1").state == JobState.FAILED
    finally:
        host.close(kill_children=True)


def test_parked_sas_reaches_the_scorer_only_through_the_secret_file(
        setup: tuple[Settings, Path], azurite: object, camera_trap_dir: Path) -> None:
    """A caller's SAS is parked, the manifest carries only its name, the scorer reads Azurite with it."""
    settings, _ = setup
    service, container = new_container(azurite)
    for p in PHOTOS[:3]:
        service.get_container_client(container).upload_blob(f"cam/{p}", (camera_trap_dir / p).read_bytes())
    sas = generate_container_sas("devstoreaccount1", container, account_key=AZURITE_KEY, permission="rl",
                                 expiry=datetime.now(UTC) + timedelta(hours=1))
    signature = dict(kv.split("=", 1) for kv in sas.split("&"))["sig"]
    request_url = f"{azurite.blob_endpoint}/{container}?{sas}"  # type: ignore[attr-defined]
    # the HTTP door: validate, then park
    validate_input_location(request_url, settings=settings)
    secrets = secrets_from_settings(settings)
    clean_url, ref = park_url(secrets, "park00001", request_url)
    assert ref == "mdb-park00001-input" and "sig=" not in clean_url

    work = settings.state_dir / "work" / "park00001"
    (work / "shards").mkdir(parents=True, exist_ok=True)
    manifest = work / "shards" / "00000.json"
    manifest.write_text(json.dumps({"format": "mdbatch-shard/1", "request_id": "park00001", "shard": 0,
                                    "source": {"url": clean_url, "secret_ref": ref},
                                    "images": sorted(f"cam/{p}" for p in PHOTOS[:3])}))
    job = ShardJob(request_id="park00001", shard=0, attempt=1, manifest_url=manifest.as_uri(),
                   output_url=(work / "results" / "00000.json").as_uri(), model="test-rects", threshold=0.1)
    no_key = replace(settings, storage_connection_string=None)  # the parked SAS is the only way in
    host = compute_from_settings(no_key)
    try:
        host.submit(job)
        _wait(lambda: host.status(job.name).done, what="the parked-SAS job")
        assert host.status(job.name).state == JobState.SUCCEEDED, host.record(job.name)  # type: ignore
    finally:
        host.close()  # type: ignore[attr-defined]
    out = _result(job)
    assert [im["file"] for im in out["images"]] == sorted(f"cam/{p}" for p in PHOTOS[:3])
    assert all("failure" not in im for im in out["images"])
    unpark(secrets, "park00001")
    assert ref not in json.loads(settings.secrets_path.read_text())
    # the signature never left the secret store: not in the manifest, record, logs or result
    compute = settings.state_dir / "compute"
    for path in [manifest, job_path(job), compute / "done" / f"{job.name}.json",
                 compute / "logs" / f"{job.name}.err", compute / "logs" / f"{job.name}.out"]:
        assert signature not in path.read_text(), path
    service.delete_container(container)


def job_path(job: ShardJob) -> Path:
    return Path(job.output_url.removeprefix("file://"))
