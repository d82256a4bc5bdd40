"""Blob triggers on a real Azurite container, with receipts that survive a restart."""

from __future__ import annotations

import json
import time
from pathlib import Path

import requests
from azure.storage.blob import BlobServiceClient

from embedded import EmbeddedHost, VirtualClock
from tests.embedded_fixtures import SAMPLE_APP, wait_for


def test_blob_trigger_on_azurite_once_across_restart(azurite, tmp_path: Path) -> None:
    svc = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = svc.get_container_client("inbox")
    if not container.exists():
        container.create_container()
    name = f"az{int(time.time() * 1000)}"
    container.upload_blob(f"{name}.json", json.dumps({"n": 4}), overwrite=True)
    env = {"SAMPLE_BLOBS": azurite.connection_string}
    state = tmp_path / "state"
    with EmbeddedHost(SAMPLE_APP, state, clock=VirtualClock(), env=env, blob_poll_interval=0.1) as h:
        url = f"{h.base_url}/runtime/webhooks/durabletask/instances/blob-{name}"
        s = wait_for(lambda: requests.get(url).status_code == 200 and requests.get(url).json())
        assert s["output"] == 0 + 1 + 4 + 9
        created = s["createdTime"]
    with EmbeddedHost(SAMPLE_APP, state, clock=VirtualClock(), env=env, blob_poll_interval=0.1) as h:
        for _ in range(3):  # several polls after the restart
            assert h._watcher is not None
            assert h._watcher.poll() == 0
        url = f"{h.base_url}/runtime/webhooks/durabletask/instances/blob-{name}"
        assert requests.get(url).json()["createdTime"] == created
        rows = h.engine.store.query("SELECT status FROM receipts WHERE blob=?", (f"{name}.json",))
        assert rows == [("done",)]
