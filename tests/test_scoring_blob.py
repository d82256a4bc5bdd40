"""Shard manifests against Azurite: SAS from a secret_ref (secrets file or env), blob output, URL lists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from azure.storage.blob import (
    BlobServiceClient,
    ContainerSasPermissions,
    generate_blob_sas,
    generate_container_sas,
)

from scoring.demo_model import draw_rect
from scoring.engine import RunConfig, run
from scoring.storage import StorageError
from tests.conftest import REPO_ROOT, Azurite
from tests.scoring_fixtures import gradient_image, jpeg_bytes, model_dir, rect_model  # noqa: F401

REQ = "3f2a0000000000000000000000000001"
REF = f"mdb-{REQ}-input"
NAMES = ["site1/cam2/IMG_0001.JPG", "site1/cam2/IMG_0002.JPG", "site2/IMG_0003.jpg"]


@pytest.fixture()
def blob_setup(azurite: Azurite, tmp_path: Path) -> Iterator[dict]:
    svc = BlobServiceClient.from_connection_string(azurite.connection_string)
    suffix = os.urandom(4).hex()
    images = svc.create_container(f"images-{suffix}")
    work = svc.create_container(f"work-{suffix}")
    for i, name in enumerate(NAMES):
        img = gradient_image(400, 300, seed=i)
        if i != 1:
            draw_rect(img, "2", (0.25, 0.25, 0.5, 0.5))
        images.upload_blob(name, jpeg_bytes(img, subsampling=0))
    images.upload_blob("site2/broken.jpg", b"\xff\xd8\xff not really")
    sas = generate_container_sas(
        account_name=azurite.account_name, container_name=images.container_name,
        account_key=azurite.account_key, permission=ContainerSasPermissions(read=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1))
    manifest = {
        "format": "mdbatch-shard/1", "request_id": REQ, "shard": 0,
        "source": {"url": f"{azurite.blob_endpoint}/{images.container_name}", "secret_ref": REF},
        "images": sorted([*NAMES, "site2/broken.jpg", "site2/missing.jpg"]),
        "meta": {NAMES[0]: {"any": "json"}},
    }
    work.upload_blob(f"{REQ}/shards/00000.json", json.dumps(manifest))
    yield {"svc": svc, "images": images, "work": work, "sas": sas, "azurite": azurite,
           "manifest_url": f"{azurite.blob_endpoint}/{work.container_name}/{REQ}/shards/00000.json",
           "output_url": f"{azurite.blob_endpoint}/{work.container_name}/{REQ}/results/00000.json"}
    svc.delete_container(images.container_name)
    svc.delete_container(work.container_name)


def _check_results(data: dict) -> None:
    res = {e["file"]: e for e in data["images"]}
    assert list(res) == sorted([*NAMES, "site2/broken.jpg", "site2/missing.jpg"])
    assert [d["category"] for d in res[NAMES[0]]["detections"]] == ["2"]
    assert res[NAMES[0]]["meta"] == {"any": "json"}
    assert res[NAMES[1]]["detections"] == []
    x, y, w, h = res[NAMES[2]]["detections"][0]["bbox"]
    assert abs(x - 0.25) < 0.01 and abs(w - 0.5) < 0.01 and abs(y - 0.25) < 0.01 and abs(h - 0.5) < 0.01
    assert "failure" in res["site2/broken.jpg"] and "failure" in res["site2/missing.jpg"]
    assert data["info"]["format_version"] == "1.6"


def test_cli_manifest_on_azurite_with_secrets_file(blob_setup: dict, tmp_path: Path,
                                                   rect_model: Path) -> None:  # noqa: F811
    az: Azurite = blob_setup["azurite"]
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({REF: blob_setup["sas"]}))
    secrets.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDBATCH_SECRET")}
    # manifest and output use the job's own identity: here the Azurite connection string
    env.update(MDBATCH_SECRETS_FILE=str(secrets), AZURE_STORAGE_CONNECTION_STRING=az.connection_string)
    r = subprocess.run([sys.executable, "-m", "scoring", "--model", str(rect_model),
                        "--input", blob_setup["manifest_url"], "--output", blob_setup["output_url"]],
                       cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert blob_setup["sas"] not in r.stderr + r.stdout
    name = blob_setup["output_url"].split(blob_setup["work"].container_name + "/", 1)[1]
    data = json.loads(blob_setup["work"].download_blob(name).readall())
    _check_results(data)
    assert not blob_setup["work"].get_blob_client(name + ".checkpoint.json").exists()
    assert blob_setup["sas"] not in json.dumps(data)


def test_secret_from_env_and_no_secret_fails_cleanly(blob_setup: dict, tmp_path: Path,
                                                     rect_model: Path,  # noqa: F811
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    az: Azurite = blob_setup["azurite"]
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", az.connection_string)
    monkeypatch.delenv("MDBATCH_SECRETS_FILE", raising=False)
    monkeypatch.setenv("MDBATCH_SECRET_" + REF.upper().replace("-", "_"), "?" + blob_setup["sas"])
    out = tmp_path / "out.json"
    run(RunConfig(model=rect_model, input=blob_setup["manifest_url"], output=str(out)))
    _check_results(json.loads(out.read_text()))
    # the secret cannot be found: one clear error, no secret in it
    monkeypatch.delenv("MDBATCH_SECRET_" + REF.upper().replace("-", "_"))
    with pytest.raises(StorageError, match=f"secret '{REF}' not found"):
        run(RunConfig(model=rect_model, input=blob_setup["manifest_url"], output=str(out)))


def test_url_list_with_blob_sas(blob_setup: dict, tmp_path: Path, rect_model: Path,  # noqa: F811
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """use_url style: a manifest with source null and full blob URLs (each with its own SAS)."""
    az: Azurite = blob_setup["azurite"]
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    cont = blob_setup["images"].container_name
    urls = []
    for name in NAMES:
        sas = generate_blob_sas(account_name=az.account_name, container_name=cont, blob_name=name,
                                account_key=az.account_key, permission="r",
                                expiry=datetime.now(UTC) + timedelta(hours=1))
        urls.append(f"{az.blob_endpoint}/{cont}/{name}?{sas}")
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"format": "mdbatch-shard/1", "request_id": REQ, "shard": 1,
                                    "source": None, "images": sorted(urls)}))
    out = tmp_path / "out.json"
    stats = run(RunConfig(model=rect_model, input=f"file://{manifest}", output=f"file://{out}"))
    assert stats.failed == 0
    res = json.loads(out.read_text())["images"]
    assert [e["file"] for e in res] == sorted(urls)
    assert sum(len(e["detections"]) for e in res) == 2


def test_local_folder_manifest(tmp_path: Path, rect_model: Path) -> None:  # noqa: F811
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    img = gradient_image(200, 100)
    draw_rect(img, "3", (0.1, 0.1, 0.5, 0.5))
    (src / "a" / "x.jpg").write_bytes(jpeg_bytes(img, subsampling=0))
    (src / "b.jpg").write_bytes(jpeg_bytes(np.asarray(gradient_image(50, 60))))
    m = tmp_path / "m.json"
    m.write_text(json.dumps({"format": "mdbatch-shard/1", "request_id": REQ, "shard": 2,
                             "source": {"url": f"file://{src}", "secret_ref": None},
                             "images": ["a/x.jpg", "b.jpg"]}))
    out = tmp_path / "o.json"
    run(RunConfig(model=rect_model, input=str(m), output=str(out)))
    res = json.loads(out.read_text())["images"]
    assert [d["category"] for d in res[0]["detections"]] == ["3"] and res[1]["detections"] == []
