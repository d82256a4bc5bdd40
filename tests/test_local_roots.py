"""Issue 14, item 2: local sources only under the configured roots, never the service's state.

`serve`/`detect` (the embedded host) accepted `/`, `/etc`, relative paths (resolved in the server's
working folder) and the state folder (keys, parked secrets) as `input_container_sas`, and image
lists could name any local file. Now the door resolves the path (symlinks, '..') and answers 400
naming the rule; list entries that leave the root become failures, never reads.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import requests

from activities import services as sv
from activities import steps
from adapters.errors import LocationError
from adapters.settings import Settings, SettingsError
from adapters.storage import check_caller_location, validate_input_location
from batch.signing import sign_spec
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


@dataclass(frozen=True)
class Layout:
    root: Path      # the one configured root; it also holds the state folder
    state: Path     # MDBATCH_STATE_DIR (keys, secrets, work), inside the root
    photos: Path    # a folder of images under the root
    outside: Path   # a folder of images outside every root


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory, dataset: Dataset) -> Layout:  # noqa: F811
    root = tmp_path_factory.mktemp("roots") / "root"
    outside = tmp_path_factory.mktemp("outside")
    photos = root / "photos"
    shutil.copytree(dataset.root, photos)
    for name in dataset.answers:  # the outside copies have planted boxes: read, they would be found
        (outside / Path(name).name).write_bytes((dataset.root / name).read_bytes())
    (root / "state").mkdir(parents=True)
    (photos / "link-out").symlink_to(outside, target_is_directory=True)
    return Layout(root=root, state=root / "state", photos=photos, outside=outside)


def _settings(lay: Layout, **kw: object) -> Settings:
    return replace(Settings(state_dir=lay.state, allow_local_storage=True, local_roots=(str(lay.root),)),
                   **kw)  # type: ignore[arg-type]


# --- the rule itself ------------------------------------------------------------------------------

def test_setting_is_absolute_folders_separated_by_pathsep(tmp_path: Path) -> None:
    s = Settings.from_env({"MDBATCH_LOCAL_ROOTS": f"{tmp_path}/a{os.pathsep}{tmp_path}/b{os.pathsep}"})
    assert s.local_roots == (f"{tmp_path}/a", f"{tmp_path}/b")
    with pytest.raises(SettingsError, match=r"MDBATCH_LOCAL_ROOTS.*not an absolute path"):
        Settings.from_env({"MDBATCH_LOCAL_ROOTS": "photos"})
    assert Settings.from_env({}).local_roots == ()


@pytest.mark.parametrize("given,code,words", [
    ("/", "local_outside_roots", "not under a configured root"),
    ("/etc", "local_outside_roots", "not under a configured root"),
    ("photos", "local_relative", "is relative"),
    ("./photos", "local_relative", "is relative"),
    ("~/photos", "local_relative", "is relative"),
    ("{root}/photos/../../outside", "local_outside_roots", "not under a configured root"),
    ("{root}/photos/link-out", "local_outside_roots", "resolves to"),
    ("{root}/state", "local_private", "service's own state"),
    ("{root}/state/work", "local_private", "service's own state"),
    ("{root}", "local_private", "holds"),
])
def test_door_rule(layout: Layout, given: str, code: str, words: str) -> None:
    url = given.replace("{root}", str(layout.root))
    for form in (url, Path(url).as_uri() if url.startswith("/") else url):
        with pytest.raises(LocationError) as err:
            validate_input_location(form, settings=_settings(layout), check_remote=False)
        assert err.value.code == code and words in str(err.value), (form, str(err.value))


def test_inside_a_root_is_accepted_and_no_root_means_none(layout: Layout) -> None:
    loc = validate_input_location(str(layout.photos), settings=_settings(layout))
    assert loc.kind == "local" and loc.path == layout.photos
    with pytest.raises(LocationError, match=r"none is configured .MDBATCH_LOCAL_ROOTS"):
        validate_input_location(str(layout.photos), settings=_settings(layout, local_roots=()))
    with pytest.raises(LocationError, match="service's own state"):  # an extra private folder
        check_caller_location(str(layout.photos), _settings(layout, private_dirs=(str(layout.photos),)))


def test_plan_refuses_a_signed_spec_outside_the_roots(tmp_path: Path, layout: Layout, model_dir: Path,  # noqa: F811
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth: the roots are checked again where the images are listed."""
    for k, v in service_env(tmp_path / "state", model_dir, MDBATCH_LOCAL_ROOTS=str(layout.root)).items():
        monkeypatch.setenv(k, v)
    svc = sv.get()
    job = {"request_id": "e" * 32, "caller": "alice",
           "source": {"url": layout.outside.as_uri(), "secret_ref": None}, "image_list": None,
           "use_url": False, "image_path_prefix": None, "first_n": 1, "sample_n": None,
           "model": "test-rects", "threshold": 0.005, "options": options(svc.settings)}
    with pytest.raises(steps.RequestProblem, match=r"input_container_sas: .* not under a configured root"):
        steps.plan(svc, sign_spec(svc.service_key(), job))
    assert not svc.work.exists(sv.plan_name("e" * 32))


def test_cli_service_env_adds_the_folder_and_keeps_home_private(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from mdbatch import local

    monkeypatch.setenv("MDBATCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MDBATCH_LOCAL_ROOTS", "/srv/photos")
    env = local.service_env(tmp_path / "models", "demo", 1, roots=[tmp_path / "pics"])
    assert env["MDBATCH_LOCAL_ROOTS"].split(os.pathsep) == ["/srv/photos", str((tmp_path / "pics").resolve())]
    assert env["MDBATCH_PRIVATE_DIRS"] == str((tmp_path / "home").resolve())


# --- through the door of the real app -------------------------------------------------------------

@pytest.fixture(scope="module")
def host(layout: Layout, model_dir: Path) -> Iterator[EmbeddedHost]:  # noqa: F811
    env = service_env(layout.state, model_dir, MDBATCH_LOCAL_ROOTS=str(layout.root))
    with EmbeddedHost(APP_DIR, layout.root.parent / "host", workers=4, env=env) as h:
        yield h


def _post(host: EmbeddedHost, body: dict) -> requests.Response:
    return requests.post(f"{host.base_url}/api/detections", json={"caller": "bob", **body}, timeout=30)


def test_http_door_refuses_paths_outside_the_roots(host: EmbeddedHost, layout: Layout) -> None:
    (layout.outside / "list.json").write_text(json.dumps(["a.png"]))
    cases = {
        "/": "not under a configured root",
        "/etc": "not under a configured root",
        "photos": "is relative",
        str(layout.state): "service's own state",
        layout.state.as_uri(): "service's own state",
        str(layout.root): "holds",
        str(layout.photos / "link-out"): "not under a configured root",
        f"{layout.photos}/../../{layout.outside.name}": "not under a configured root",
    }
    for src, words in cases.items():
        r = _post(host, {"input_container_sas": src, "first_n": 5})
        assert r.status_code == 400, (src, r.status_code, r.text)
        assert r.json()["error"].startswith("invalid request: input_container_sas: "), r.text
        assert words in r.text, r.text
    r = _post(host, {"input_container_sas": str(layout.photos),
                     "images_requested_json_sas": str(layout.outside / "list.json")})
    assert r.status_code == 400 and "images_requested_json_sas: " in r.text, r.text
    assert "not under a configured root" in r.text, r.text
    r = _post(host, {"input_container_sas": str(layout.photos),
                     "images_requested_json_sas": str(layout.state / "secrets.json")})
    assert r.status_code == 400 and "service's own state" in r.text, r.text
    listed = requests.get(f"{host.base_url}/api/detections", params={"caller": "bob"}, timeout=10).json()
    assert listed == {"jobs": []}, "nothing started"




def test_list_entries_that_leave_the_root_are_failures(host: EmbeddedHost, layout: Layout,
                                                       dataset: Dataset) -> None:  # noqa: F811
    inside = sorted(n for n in dataset.answers if dataset.answers[n])[:2]
    victim = next(p.name for p in sorted(layout.outside.iterdir()) if p.suffix == ".png")
    leaving = [f"../../{layout.outside.name}/{victim}", str(layout.outside / victim), f"link-out/{victim}",
               f"{inside[0].split('/')[0]}/../../{layout.outside.name}/{victim}"]
    lst = layout.photos / "mixed.json"
    lst.write_text(json.dumps([*inside, *leaving]))
    r = _post(host, {"input_container_sas": layout.photos.as_uri(), "images_requested_json_sas": lst.as_uri(),
                     "caller": "alice"})
    assert r.status_code == 202, r.text
    doc = follow(r.json()["statusQueryGetUri"])
    assert doc["runtimeStatus"] == "Completed", doc
    det = requests.get(doc["output"]["output_file_urls"]["detections"], timeout=30)  # a signed link
    assert det.status_code == 200, det.text
    images = {im["file"]: im for im in det.json()["images"]}
    for name in inside:
        assert images[name].get("failure") is None and images[name]["detections"], images[name]
    for name in leaving:
        im = images[name]
        assert im["detections"] is None and "outside the source" in im["failure"], im


def test_mdbatch_serve_never_reads_its_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The red-team case as it was run: `mdbatch serve`, its home (keys, parked secrets, inbox)
    under an allowed root, and requests naming `/`, the home and its state folder."""
    from cli_fixtures import serving

    home = tmp_path_factory.mktemp("serve-home")
    with serving(home, "--model", "demo") as served:
        assert "local folders: under " in served.banner, served.banner
        headers = {"x-functions-key": served.key}
        for src in ("/", str(home), str(home / "service"), (home / "inbox").as_uri(), "relative/photos"):
            r = requests.post(f"{served.url}/api/detections", headers=headers, timeout=30,
                              json={"input_container_sas": src, "first_n": 1, "model_version": "demo"})
            assert r.status_code == 400, (src, r.status_code, r.text)
            assert "input_container_sas: local path" in r.json()["error"], r.text
        jobs = requests.get(f"{served.url}/api/detections", headers=headers, timeout=10).json()
        assert jobs == {"jobs": []}
