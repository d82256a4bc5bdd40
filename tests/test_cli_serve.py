"""`mdbatch serve` in the foreground, and submit/status/wait/list/models/cancel against it over HTTP."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_fixtures import (
    Planted,
    Served,
    check_results,
    drop_request,
    plant_photos,
    run_cli,
    serving,
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("serve-home")
    with serving(home, "--model", "demo") as served:
        yield served


@pytest.fixture(scope="module")
def planted_mod(tmp_path_factory: pytest.TempPathFactory, camera_trap_dir: Path) -> Planted:
    return plant_photos(tmp_path_factory.mktemp("serve-photos") / "photos", camera_trap_dir)


def _api(s: Served) -> list[str]:
    return ["--api", s.url, "--key", s.key]


def test_submit_wait_status_list_models(served: Served, planted_mod: Planted, tmp_path: Path) -> None:
    client_home = tmp_path / "client"  # a client elsewhere: nothing local to fall back on
    sub = run_cli("submit", str(planted_mod.folder), "--model", "demo", "--name", "cam-check", *_api(served),
                  home=client_home)
    assert sub.returncode == 0, sub.stdout + sub.stderr
    m = re.search(r"request ([0-9a-f]{32}) submitted", sub.stdout)
    assert m, sub.stdout
    rid = m.group(1)
    assert served.key not in sub.stdout, "the key is not printed back (status URL redacted)"

    out = tmp_path / "r.json"
    w = run_cli("wait", rid, "-o", str(out), "--images", str(planted_mod.folder), *_api(served),
                home=client_home)
    assert w.returncode == 0, w.stdout + w.stderr
    assert "5/5 images" in w.stdout and "completed" in w.stdout
    check_results(json.loads(out.read_text()), planted_mod)
    assert out.with_suffix(".html").is_file()

    # the key from the environment works as well as --key
    st = run_cli("status", rid, "--api", served.url, home=client_home,
                 env_extra={"MDBATCH_API_KEY": served.key})
    assert st.returncode == 0, st.stderr
    assert re.search(r"state\s+completed", st.stdout) and re.search(r"images\s+5", st.stdout)
    assert "detections" in st.stdout

    ls = run_cli("list", *_api(served), home=client_home)
    assert ls.returncode == 0 and rid in ls.stdout and "cam-check" in ls.stdout
    ls_json = run_cli("list", "--state", "completed", "--json", *_api(served), home=client_home)
    assert rid in ls_json.stdout

    mods = run_cli("models", *_api(served), home=client_home)
    assert mods.returncode == 0 and "demo  (default)" in mods.stdout

    # same machine, same MDBATCH_HOME as serve: the key comes from the service's state folder
    local = run_cli("status", rid, "--api", served.url, home=served.home)
    assert local.returncode == 0, local.stderr

    done = run_cli("cancel", rid, *_api(served), home=client_home)
    assert done.returncode == 0 and "already completed" in done.stdout


def test_bad_key_and_unknown_job(served: Served, tmp_path: Path) -> None:
    p = run_cli("list", "--api", served.url, "--key", "not-the-key", home=tmp_path)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0
    assert "refused the key" in p.stderr and "--key" in p.stderr and "Traceback" not in p.stderr
    p = run_cli("list", "--api", served.url, home=tmp_path)  # no key at all
    assert p.returncode == 2 and "refused the key" in p.stderr
    p = run_cli("status", "0" * 32, *_api(served), home=tmp_path)
    assert p.returncode == 2 and "no job" in p.stderr and "mdbatch list" in p.stderr


def test_second_serve_on_the_same_port_is_refused(served: Served, tmp_path: Path) -> None:
    port = served.url.rsplit(":", 1)[1]
    p = run_cli("serve", "--port", port, home=tmp_path, timeout=60)
    assert p.returncode == 2 and f"port {port} is in use" in p.stderr and "Traceback" not in p.stderr


def test_request_dropped_into_the_inbox_runs(served: Served, planted_mod: Planted, tmp_path: Path) -> None:
    """The blob-upload door on one machine: a request JSON in the watched folder starts a job."""
    body = {"input_container_sas": planted_mod.folder.as_uri(), "model_version": "demo",
            "request_name": "dropped", "caller": "field-team"}
    rid = drop_request(served, "site-a.json", body)["request_id"]
    assert rid.startswith("req-")
    out = tmp_path / "dropped.json"
    hidden = run_cli("status", rid, *_api(served), home=tmp_path)
    assert hidden.returncode == 2 and "no job" in hidden.stderr, "another caller's job stays hidden"
    w = run_cli("wait", rid, "-o", str(out), "--caller", "field-team", *_api(served), home=tmp_path)
    assert w.returncode == 0, w.stdout + w.stderr
    check_results(json.loads(out.read_text()), planted_mod)
