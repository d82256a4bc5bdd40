"""Request-level steps are retried: a storage hiccup at publish time must not waste the scoring."""

from __future__ import annotations

import time
from pathlib import Path

import requests

from embedded import EmbeddedHost
from tests.service_fixtures import (  # noqa: F401
    APP_DIR,
    Dataset,
    check_results,
    dataset,
    model_dir,
    service_env,
)
from tests.test_service_e2e import follow, result


def _history(status_url: str) -> list[dict]:
    r = requests.get(status_url + "&showHistory=true", timeout=10)
    return r.json().get("historyEvents") or []


def test_publish_failing_once_is_retried_and_the_job_completes(
        tmp_path: Path, model_dir: Path, dataset: Dataset) -> None:  # noqa: F811
    blocker = tmp_path / "out"
    blocker.write_text("a file where the output folder should be")  # publish cannot write under it
    env = service_env(tmp_path, model_dir, MDBATCH_OUTPUT_URL=blocker.as_uri(),
                      MDBATCH_ACTIVITY_ATTEMPTS="10", MDBATCH_ACTIVITY_RETRY_S="0.5")
    with EmbeddedHost(APP_DIR, tmp_path / "host", workers=4, env=env) as h:
        r = requests.post(f"{h.base_url}/api/detections", timeout=30,
                          json={"input_container_sas": dataset.root.as_uri(), "caller": "alice"})
        assert r.status_code == 202, r.text
        status_url = r.json()["statusQueryGetUri"]
        # the history is the operator's view (the extension's webhook), never in a caller's status link
        hub_url = f"{h.base_url}/runtime/webhooks/durabletask/instances/{r.json()['id']}?taskHub=mdbtest"
        deadline = time.monotonic() + 120
        failed_publish = []
        while time.monotonic() < deadline and not failed_publish:
            failed_publish = [e for e in _history(hub_url)
                              if e.get("EventType") == "TaskFailed" and "publish" in str(e)]
            time.sleep(0.2)
        assert failed_publish, "publish never failed: the test did not exercise a retry"
        blocker.unlink()  # storage is back
        doc = follow(status_url)
        assert doc["runtimeStatus"] == "Completed", doc
        check_results(result(h.base_url, doc), dataset)
