"""Helpers for the embedded host's tests: start hosts on the sample app, drive them over HTTP."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import requests

SAMPLE_APP = Path(__file__).resolve().parent / "embedded_apps" / "durable_app"
TERMINAL = ("Completed", "Failed", "Terminated")


def start(base_url: str, name: str, payload: Any = None, instance_id: str | None = None) -> dict:
    """Start through the app's own HTTP starter (which uses the real SDK client)."""
    params = {"id": instance_id} if instance_id else None
    r = requests.post(f"{base_url}/api/orchestrators/{name}", json=payload, params=params, timeout=30)
    assert r.status_code == 202, (r.status_code, r.text)
    body = r.json()
    assert r.headers["Location"] == body["statusQueryGetUri"]
    return body


def wait_done(status_url: str, timeout: float = 60.0, states: tuple[str, ...] = TERMINAL) -> dict:
    deadline = time.monotonic() + timeout
    last: dict = {}
    while time.monotonic() < deadline:
        r = requests.get(status_url, timeout=30)
        last = r.json()
        if last.get("runtimeStatus") in states:
            return last
        time.sleep(0.03)
    raise AssertionError(f"instance did not reach {states} in {timeout}s: {last}")


def run(base_url: str, name: str, payload: Any = None, timeout: float = 60.0) -> dict:
    return wait_done(start(base_url, name, payload)["statusQueryGetUri"], timeout)


def wait_for(pred: Any, timeout: float = 30.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError("condition not met in time")
