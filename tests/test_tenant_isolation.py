"""Issue 14, item 1: one caller never reaches another's job, and nothing a caller holds opens the
Durable management API.

The red-team attack, layer by layer, on the real app in the embedded host with keys enforced:
1. the 202 answer hands out no task-hub key: its status URL is scoped to one request and caller;
2. a forged start of `detection_batch` (made here with the system key, which no caller holds any
   more) naming A's parked secret is refused by `plan` (unsigned spec) and by the orchestrator
   (spec for another id); a spec signed for one request cannot resolve another request's secret;
3. caller B cannot list, read, cancel, terminate or purge A's job by any route, new or v4.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests

from activities import services as sv
from activities import steps
from adapters.secrets import LocalSecretStore
from batch.signing import (
    SignatureError,
    StatusGrant,
    check_status_token,
    sign_spec,
    status_token,
    verify_spec,
)
from embedded import EmbeddedHost
from tests.service_fixtures import (  # noqa: F401
    APP_DIR,
    Dataset,
    dataset,
    model_dir,
    service_env,
)
from tests.test_service_e2e import follow
from triggers.service import options

WEBHOOK = "runtime/webhooks/durabletask"




# --- signing (pure) -------------------------------------------------------------------------------

def test_spec_signature_covers_every_field() -> None:
    key = b"k" * 32
    spec = {"request_id": "a" * 32, "caller": "alice", "source": {"url": "file:///x", "secret_ref": None}}
    signed = sign_spec(key, spec)
    verify_spec(key, signed)
    for change in ({"caller": "bob"}, {"source": {"url": "file:///x", "secret_ref": "mdb-x-input"}},
                   {"request_id": "b" * 32}, {"extra": 1}):
        with pytest.raises(SignatureError):
            verify_spec(key, {**signed, **change})
    with pytest.raises(SignatureError):
        verify_spec(b"o" * 32, signed)  # another service's key
    with pytest.raises(SignatureError, match="not signed"):
        verify_spec(key, spec)


def test_status_token_is_bound_to_request_caller_and_expiry() -> None:
    key = b"k" * 32
    tok = status_token(key, StatusGrant("a" * 32, "alice", 2_000))
    check_status_token(key, tok, "a" * 32, "alice", now=1_000)
    for rid, caller, now in (("b" * 32, "alice", 1_000), ("a" * 32, "bob", 1_000)):
        with pytest.raises(SignatureError, match="not valid"):
            check_status_token(key, tok, rid, caller, now)
    with pytest.raises(SignatureError, match="expired"):
        check_status_token(key, tok, "a" * 32, "alice", now=3_000)
    forged = tok.replace(".2000.", ".9999.")  # a later expiry does not keep the MAC
    with pytest.raises(SignatureError):
        check_status_token(key, forged, "a" * 32, "alice", now=1_000)


# --- the real app, keys enforced ------------------------------------------------------------------

@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[EmbeddedHost]:  # noqa: F811
    state = tmp_path_factory.mktemp("tenant-state")
    env = service_env(state, model_dir, MDBATCH_FUNCTION_KEYS_FILE=str(state / "host" / "keys.json"))
    with EmbeddedHost(APP_DIR, state / "host", workers=4, env=env, require_keys=True) as h:
        yield h


def _keys(host: EmbeddedHost) -> dict[str, str]:
    return json.loads((Path(host.state_dir) / "keys.json").read_text())


def _api(host: EmbeddedHost, method: str, path: str, **kw: object) -> requests.Response:
    headers = {"x-functions-key": host.function_key or ""}
    return requests.request(method, f"{host.base_url}/api/{path}", headers=headers, timeout=30, **kw)


def _submit(host: EmbeddedHost, data: Dataset, caller: str, **extra: object) -> requests.Response:
    body = {"input_container_sas": data.root.as_uri(), "caller": caller, **extra}
    r = _api(host, "POST", "detections", json=body)
    assert r.status_code == 202, r.text
    return r


def test_submit_answer_holds_no_task_hub_key(host: EmbeddedHost, dataset: Dataset) -> None:  # noqa: F811
    r = _submit(host, dataset, "alice", first_n=3)
    answer = r.json()
    text = r.text + json.dumps(dict(r.headers))
    for name, value in _keys(host).items():
        if name != "function":  # the caller's own key is never echoed either, but it is the caller's
            assert value not in text, f"the {name} key is in the answer"
    assert host.function_key not in text
    assert "code=" not in text and WEBHOOK not in text
    assert set(answer) == {"id", "statusQueryGetUri", "terminatePostUri"}, answer
    assert r.headers["Location"] == answer["statusQueryGetUri"]
    status_url = answer["statusQueryGetUri"]
    assert status_url.startswith(f"{host.base_url}/api/detections/{answer['id']}/durable-status?sig=")
    # the link alone (no function key) answers in the Durable status shape, input curated
    doc = follow(status_url)
    assert doc["runtimeStatus"] == "Completed" and doc["instanceId"] == answer["id"], doc
    assert set(doc) == {"name", "instanceId", "runtimeStatus", "input", "customStatus", "output",
                        "createdTime", "lastUpdatedTime"}
    assert doc["name"] == "detection_batch" and doc["output"]["images"] == 3
    assert doc["customStatus"]["stage"] == "completed"
    shown = json.dumps(doc["input"])
    assert doc["input"]["caller"] == "alice" and doc["input"]["input_container"] == dataset.root.as_uri()
    for hidden in ("secret_ref", "spec_sig", "options", "status_blob"):
        assert hidden not in shown, hidden
    # terminatePostUri is our caller-scoped cancel (function key required, as for every route)
    term = answer["terminatePostUri"]
    assert term == f"{host.base_url}/api/detections/{answer['id']}/cancel?caller=alice"
    assert requests.post(term, timeout=10).status_code == 401
    done = requests.post(term, headers={"x-functions-key": host.function_key or ""}, timeout=10)
    assert done.status_code == 200 and done.json()["state"] == "completed", done.text


def test_a_status_link_opens_one_request_only(host: EmbeddedHost, dataset: Dataset) -> None:  # noqa: F811
    a = _submit(host, dataset, "alice", first_n=2).json()
    b = _submit(host, dataset, "bob", first_n=2).json()
    follow(a["statusQueryGetUri"])
    b_sig = parse_qs(urlsplit(b["statusQueryGetUri"]).query)["sig"][0]
    base = f"{host.base_url}/api/detections"
    for url in (f"{base}/{a['id']}/durable-status?sig={quote(b_sig)}",  # B's token on A's job
                f"{base}/{a['id']}/durable-status",                       # no token
                f"{base}/{a['id']}/durable-status?sig={quote(b_sig[:-2] + 'AA')}",
                a["statusQueryGetUri"].replace(a["id"], b["id"]).replace(b["id"], "f" * 32)):
        r = requests.get(url, timeout=10)
        assert r.status_code == 404, (url, r.status_code, r.text)
        assert "runtimeStatus" not in r.text and "output" not in r.json()
    # a token made for alice on A's id does not open it once the job names another caller: the
    # token is checked against the caller recorded in the job, not one given in the URL
    svc_key = _service_key(host)
    forged = status_token(svc_key, StatusGrant(a["id"], "bob", int(time.time()) + 60))
    assert requests.get(f"{base}/{a['id']}/durable-status?sig={quote(forged)}", timeout=10).status_code == 404
    expired = status_token(svc_key, StatusGrant(a["id"], "alice", int(time.time()) - 5))
    r = requests.get(f"{base}/{a['id']}/durable-status?sig={quote(expired)}", timeout=10)
    assert r.status_code == 403 and "expired" in r.json()["error"]


def _service_key(host: EmbeddedHost) -> bytes:
    """Read as the service does, from its secret store (tests only: to make tokens it would refuse)."""
    import base64

    secrets = json.loads((Path(host.env["MDBATCH_STATE_DIR"]) / "secrets.json").read_text())
    return base64.urlsafe_b64decode(secrets["mdb-service-signing-key"].encode())


def test_caller_b_cannot_reach_a_by_any_route(host: EmbeddedHost, dataset: Dataset) -> None:  # noqa: F811
    a = _submit(host, dataset, "alice", first_n=4).json()
    rid = a["id"]
    b_answer = _submit(host, dataset, "bob", first_n=1).json()
    b_sig = parse_qs(urlsplit(b_answer["statusQueryGetUri"]).query)["sig"][0]
    fkey = host.function_key or ""
    # everything B holds: the function key, his own ids, his own status link token
    for code in (fkey, b_sig):
        hub = f"{host.base_url}/{WEBHOOK}"
        attempts = [
            ("GET", f"{hub}/instances?showInput=true"),
            ("GET", f"{hub}/instances/{rid}?showInput=true"),
            ("POST", f"{hub}/instances/{rid}/terminate?reason=x"),
            ("DELETE", f"{hub}/instances/{rid}"),
            ("DELETE", f"{hub}/instances"),
            ("POST", f"{hub}/instances/{rid}/raiseEvent/x"),
            ("POST", f"{hub}/orchestrators/detection_batch/{'e' * 32}"),
        ]
        for method, url in attempts:
            for how in ({"params": {"code": code}}, {"headers": {"x-functions-key": code}}):
                r = requests.request(method, url, timeout=10, json={}, **how)  # type: ignore[arg-type]
                assert r.status_code == 401, (method, url, r.status_code, r.text)
    # the app's routes, new and v4, with B naming himself
    assert _api(host, "GET", f"detections/{rid}", params={"caller": "bob"}).status_code == 404
    listed = _api(host, "GET", "detections", params={"caller": "bob"}).json()["jobs"]
    assert rid not in json.dumps(listed) and b_answer["id"] in json.dumps(listed)
    assert _api(host, "POST", f"detections/{rid}/cancel", params={"caller": "bob"}).status_code == 404
    assert _api(host, "POST", f"detections/{rid}/cancel", json={"caller": "bob"}).status_code == 404
    v4 = "v4/camera-trap/detection-batch"
    r = _api(host, "GET", f"{v4}/task/{rid}", params={"caller": "bob"})
    assert r.status_code == 404, r.text
    assert _api(host, "POST", f"{v4}/cancel_request", json={"request_id": rid, "caller": "bob"}).status_code \
        == 404
    # A's job went on untouched
    doc = follow(a["statusQueryGetUri"])
    assert doc["runtimeStatus"] == "Completed" and doc["output"]["images"] == 4


def test_forged_start_is_refused_by_plan(host: EmbeddedHost, dataset: Dataset) -> None:  # noqa: F811
    """The attack's second step, with the system key (which no caller holds any more): start
    detection_batch directly with a spec naming A's parked secret. Plan refuses it: not signed."""
    a = _submit(host, dataset, "alice", first_n=2).json()
    parked = LocalSecretStore(Path(host.env["MDBATCH_STATE_DIR"]) / "secrets.json")
    parked.set(f"mdb-{a['id']}-input", "sv=2024-01-01&sr=c&sp=rl&sig=parkedbyA")  # as if A had a SAS
    forged_id = "d" * 32
    s = sv.settings()
    spec = {"request_id": forged_id, "caller": "bob", "request_name": None, "model": "test-rects",
            "threshold": 0.005,
            "source": {"url": dataset.root.as_uri(), "secret_ref": f"mdb-{a['id']}-input"},
            "image_list": None, "use_url": False, "image_path_prefix": None, "first_n": None,
            "sample_n": None, "status_blob": None, "submitted": "2026-01-01T00:00:00+00:00",
            "options": {**options(s), "shard_size": 4, "window": 4, "activity_attempts": 1}}
    system = _keys(host)["durabletask"]
    url = f"{host.base_url}/{WEBHOOK}/orchestrators/detection_batch/{forged_id}"
    r = requests.post(url, params={"code": system}, json=spec, timeout=10)
    assert r.status_code == 202, r.text
    status = f"{host.base_url}/{WEBHOOK}/instances/{forged_id}"
    doc = follow(f"{status}?code={system}")
    assert doc["runtimeStatus"] == "Failed", doc
    assert "not signed by this service's doors" in json.dumps(doc["customStatus"]), doc["customStatus"]
    work = Path(host.env["MDBATCH_STATE_DIR"]) / "work"
    assert not (work / forged_id / "shards").exists(), "no manifest was written for the forged job"
    # a spec for A's id started under another instance id: refused before anything runs, so A's
    # parked secret is not cleaned up by the failed forgery either
    other_id = "c" * 32
    r = requests.post(f"{host.base_url}/{WEBHOOK}/orchestrators/detection_batch/{other_id}",
                      params={"code": system}, json={**spec, "request_id": a["id"]}, timeout=10)
    assert r.status_code == 202
    doc = follow(f"{host.base_url}/{WEBHOOK}/instances/{other_id}?code={system}")
    assert doc["runtimeStatus"] == "Failed" and "names another request" in json.dumps(doc["output"]), doc
    # B reads nothing of the forged job through our doors either (its spec names B, but it never ran)
    st = _api(host, "GET", f"detections/{forged_id}", params={"caller": "bob"}).json()
    assert st["state"] == "failed" and not st.get("result")


def test_secret_resolution_is_bound_to_its_request(tmp_path: Path, dataset: Dataset, model_dir: Path,  # noqa: F811
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Even a validly signed spec (a door bug, say) resolves only its own request's secrets."""
    for k, v in service_env(tmp_path / "state", model_dir).items():
        monkeypatch.setenv(k, v)
    svc = sv.get()
    victim = "a" * 32
    svc.secrets.set(f"mdb-{victim}-input", "sv=2024-01-01&sr=c&sp=rl&sig=victim")
    svc.secrets.set(f"mdb-{victim}-list", "sv=2024-01-01&sr=b&sp=r&sig=victim")
    base = {"request_id": "b" * 32, "caller": "bob", "use_url": False, "image_path_prefix": None,
            "first_n": None, "sample_n": None, "model": "test-rects", "threshold": 0.005,
            "options": options(svc.settings)}
    cases = [
        ({"source": {"url": dataset.root.as_uri(), "secret_ref": f"mdb-{victim}-input"}, "image_list": None},
         "input secret reference belongs to another request"),
        ({"source": {"url": dataset.root.as_uri(), "secret_ref": None},
          "image_list": {"url": (dataset.root / "list.json").as_uri(), "secret_ref": f"mdb-{victim}-list"}},
         "list secret reference belongs to another request"),
        ({"source": {"url": dataset.root.as_uri(), "secret_ref": "mdb-service-signing-key"},
          "image_list": None},
         "input secret reference belongs to another request"),
    ]
    read: list[str] = []
    real_get = svc.secrets.get
    monkeypatch.setattr(svc.secrets, "get", lambda name: (read.append(name), real_get(name))[1])
    for fields, why in cases:
        job = sign_spec(svc.service_key(), {**base, **fields})
        with pytest.raises(steps.RequestProblem, match=why):
            steps.plan(svc, job)
    assert read == [], f"secrets were read: {read}"
    assert not svc.work.exists(sv.plan_name("b" * 32))
