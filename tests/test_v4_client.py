"""An unchanged v4 client against `mdbatch serve` (issue 11), call by call.

`V4Task` below repeats, from reading it, what the v4 client does on the wire: CameraTraps at
4676403c, `api/batch_processing/data_preparation/prepare_api_submission.py` (class `Task`) as the
`manage_api_submission.py` workflow drives it. The same URLs (posixpath-joined onto the endpoint base,
no key, no query string), methods, JSON bodies and field types, and the same assertions the client and
its workflow make on each answer. Images and the image list live in Azurite behind SAS URLs, as v4's
did in Azure Blob Storage; the service runs with a caller allowlist, the way v4 authenticated.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import string
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import requests
from cli_fixtures import Planted, Served, plant_photos, serving

CALLER = "uawesome-smith"
V4_STATUSES = ("running", "failed", "problem", "completed")  # the client's TaskStatus enum
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".gif", ".tif", ".tiff", ".bmp")


# --- the v4 client, as it behaves on the wire ---------------------------------------------------

class V4Task:
    """One v4 task: the calls and checks of `prepare_api_submission.Task`."""

    def __init__(self, name: str, api_url: str, images_list_url: str) -> None:
        self.name, self.api_url, self.remote_images_list_url = name, api_url, images_list_url
        self.id: str | None = None
        self.response: dict[str, Any] = {}
        self.status: str | None = None

    def generate_api_request(self, caller: str, input_container_url: str, **kwargs: Any) -> dict[str, Any]:
        request = dict(kwargs)
        request.update({"request_name": self.name, "caller": caller,
                        "images_requested_json_sas": self.remote_images_list_url})
        request["input_container_sas"] = input_container_url
        self.api_request = request
        return request

    def submit(self) -> str:
        r = requests.post(posixpath.join(self.api_url, "request_detections"), json=self.api_request)
        r.raise_for_status()
        assert r.status_code == requests.codes.ok
        response = r.json()
        assert "error" not in response, response
        assert "request_id" in response, response
        self.id = response["request_id"]
        return self.id

    def check_status(self) -> dict[str, Any]:
        assert self.id is not None
        r = requests.get(posixpath.join(self.api_url, "task", self.id))
        r.raise_for_status()
        assert r.status_code == requests.codes.ok
        self.response = r.json()
        assert self.response["TaskId"] == self.id, self.response  # BatchAPIResponseError otherwise
        status = self.response["Status"]["request_status"]
        self.status = status if status in V4_STATUSES else f"Exception error: {status!r}"
        return self.response

    def get_output_file_urls(self) -> dict[str, str]:
        assert self.status == "completed"
        return self.response["Status"]["message"]["output_file_urls"]

    def get_missing_images(self, submitted_images: list[str]) -> list[str]:
        assert self.status == "completed"
        message = self.response["Status"]["message"]
        for url in message["output_file_urls"].values():
            assert self.id in url, f"Task ID missing from output URL: {url}"
        detections = requests.get(message["output_file_urls"]["detections"]).json()
        submitted = [s for s in submitted_images if urlsplit(s).path.lower().endswith(IMAGE_EXTS)]
        processed = [d["file"] for d in detections["images"]]
        assert set(processed) <= set(submitted)
        return sorted(set(submitted) - set(processed))


def url_to_filename(url: str) -> str:
    """The workflow's name for a downloaded result: the URL path's basename, unquoted."""
    path = urlsplit(url).path
    basename = posixpath.basename(unquote(path))
    if os.path.basename(basename) != basename or unquote(posixpath.basename(path)) != basename:
        raise ValueError(url)
    return basename


def clean_request_name(name: str) -> str:
    allowed = f"-_{string.ascii_letters}{string.digits}"
    return "".join(c for c in name if c in allowed)[:92].replace(":", "_")


# --- the test -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def container(azurite: Any, tmp_path_factory: pytest.TempPathFactory, camera_trap_dir: Path
              ) -> tuple[str, str, Planted]:
    """Planted photos in an Azurite container; (read+list container SAS URL, write SAS, planted)."""
    from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

    planted = plant_photos(tmp_path_factory.mktemp("v4-photos"), camera_trap_dir)
    name = f"traps{int(time.time() * 1000) % 10**9}"
    cc = BlobServiceClient.from_connection_string(azurite.connection_string).create_container(name)
    for p in sorted(planted.folder.rglob("*")):
        if p.is_file():
            cc.upload_blob(p.relative_to(planted.folder).as_posix(), p.read_bytes())
    expiry = datetime.now(UTC) + timedelta(hours=2)
    ro = generate_container_sas(azurite.account_name, name, account_key=azurite.account_key,
                                permission=ContainerSasPermissions(read=True, list=True), expiry=expiry)
    rw = generate_container_sas(azurite.account_name, name, account_key=azurite.account_key,
                                permission=ContainerSasPermissions(read=True, write=True, list=True),
                                expiry=expiry)
    return f"{azurite.blob_endpoint}/{name}?{ro}", rw, planted


def _upload_list(container_ro: str, write_sas: str, blob_name: str, images: list[str]) -> str:
    """What Task.upload_images_list leaves: the list blob's URL with the SAS it was uploaded with."""
    from azure.storage.blob import BlobClient

    base = container_ro.split("?", 1)[0]
    url = f"{base}/{blob_name}?{write_sas}"
    BlobClient.from_blob_url(url).upload_blob(json.dumps(images, indent=1), overwrite=True)
    return url


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("v4-serve-home")
    env = {"MDBATCH_CALLERS": f"{CALLER},someone-else", "MDBATCH_ALLOW_AZURITE": "true",
           "MDBATCH_SCORING_DELAY_MS": "150"}  # slow enough to cancel a running job
    with serving(home, "--model", "demo", env_extra=env) as s:
        yield s


def test_v4_client_workflow_against_mdbatch_serve(served: Served, container: tuple[str, str, Planted],
                                                  tmp_path: Path) -> None:
    read_only_sas_url, write_sas, planted = container
    endpoint_base = f"{served.url}/api/v4/camera-trap/detection-batch"  # no key in it: v4 had none
    base_task_name = f"{CALLER}-{datetime.now(UTC):%Y-%m-%d}"
    images = sorted(f for f in planted.answers)  # what enumeration listed (the .txt is not an image)
    # divide_files_into_tasks + the workflow's renaming: BASE.chunk000.json -> task BASE_BASE_chunk000
    task_json_filename_root = f"{base_task_name}.chunk000"
    task_name = clean_request_name(f"{base_task_name}_{task_json_filename_root}".replace(".", "_"))
    list_url = _upload_list(read_only_sas_url, write_sas,
                            f"api_inputs/{base_task_name}/{task_json_filename_root}.json", images)
    task = V4Task(task_name, endpoint_base, list_url)
    additional_task_args = {"country": "USA", "organization_name": "university of awesome"}
    request = task.generate_api_request(caller=CALLER, input_container_url=read_only_sas_url,
                                        **additional_task_args)
    task_id = task.submit()

    deadline = time.monotonic() + 240
    while True:
        response = task.check_status()
        assert task.status in V4_STATUSES, response
        if task.status != "running":
            break
        assert time.monotonic() < deadline, response
        time.sleep(1)
    assert task.status == "completed", response

    # the "look for failed shards or missing images" cell
    n_failed_shards = response["Status"]["message"]["num_failed_shards"]
    assert n_failed_shards == 0
    output_file_urls = task.get_output_file_urls()
    assert set(output_file_urls) >= {"detections", "failed_images", "images"}
    detections_url = output_file_urls["detections"]
    detections_fn = url_to_filename(detections_url).replace(":", "_")
    folder_name = ""  # the whole container is one taskgroup
    clean_folder_name = clean_request_name(folder_name.replace(".", "").replace("_", ""))
    assert (folder_name in detections_fn) or (clean_folder_name in detections_fn.replace("_", ""))
    assert "chunk" in detections_fn
    # v4's names: ID_detections_NAME_STAMP.json, ID_failed_images_NAME_STAMP.json, ID_images.json
    assert re.fullmatch(rf"{task_id}_detections_{task_name}_\d{{14}}\.json", detections_fn), detections_fn
    assert re.fullmatch(rf"{task_id}_failed_images_{task_name}_\d{{14}}\.json",
                        url_to_filename(output_file_urls["failed_images"]))
    assert url_to_filename(output_file_urls["images"]) == f"{task_id}_images.json"
    assert not any(u.startswith("file:") for u in output_file_urls.values())

    missing_images = task.get_missing_images(submitted_images=images)
    assert len(missing_images) <= 0, missing_images  # max_tolerable_missing_images
    detections_path = tmp_path / detections_fn
    urllib.request.urlretrieve(detections_url, detections_path)  # prepare_api_submission.download_url
    assert detections_path.is_file()
    detections = json.loads(detections_path.read_text())["images"]
    failed_images = [im for im in detections if "failure" in im]
    assert len(failed_images) <= 100  # max_tolerable_failed_images
    assert [im["file"] for im in failed_images] == ["cam2/broken.jpg"]
    info = json.loads(detections_path.read_text())["info"]
    assert info["country"] == "USA" and info["organization_name"] == "university of awesome"
    assert sorted(requests.get(output_file_urls["images"]).json()) == images
    assert requests.get(output_file_urls["failed_images"]).json() == ["cam2/broken.jpg"]

    # cancelling: a finished task answers 400 as v4 did; a running one is canceled
    r = requests.post(posixpath.join(endpoint_base, "cancel_request"),
                      json={"caller": CALLER, "request_id": task_id})
    assert r.status_code == 400 and "completed" in r.json()["error"], r.text
    second = V4Task(f"{task_name}_again", endpoint_base, list_url)
    second.generate_api_request(caller=CALLER, input_container_url=read_only_sas_url, **additional_task_args)
    second_id = second.submit()
    r = requests.post(posixpath.join(endpoint_base, "cancel_request"),
                      json={"caller": "someone-else", "request_id": second_id})
    assert r.status_code == 404 and r.json()["error"], r.text  # another caller's task
    r = requests.post(posixpath.join(endpoint_base, "cancel_request"),
                      json={"caller": CALLER, "request_id": second_id})
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 60
    while second.check_status()["Status"]["request_status"] != "canceled":
        assert time.monotonic() < deadline, second.response
        time.sleep(0.5)
    assert second.status == "Exception error: 'canceled'"  # the client's enum has no canceled member
    assert request["caller"] == CALLER and "country" in request  # the body went out as v4 builds it
