"""Storage: every operation against Azurite and a temp folder through the same cases."""

# ruff: noqa: F811  (fixtures imported from adapters_fixtures are test arguments)
from __future__ import annotations

import json
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from adapters_fixtures import any_store, make_settings  # noqa: F401  (pytest fixture)

from adapters.errors import AdapterError, AlreadyExistsError, NotFoundError
from adapters.storage import BlobStore, LocalStore, open_store, read_many
from adapters.storage.base import Store

NAMES = [
    "site1/cam1/IMG_0001.JPG", "site1/cam1/img_0002.jpg", "site1/cam1/notes.txt",
    "site1/cam2/IMG_0003.jpeg", "site1-x/IMG_0004.png", "site2/a b/IMG 0005.JPG", "top.jpg",
]


def _fill(store: Store) -> None:
    for n in NAMES:
        store.write_bytes(n, n.encode())


def test_write_read_exists_delete(any_store: Store) -> None:
    assert not any_store.exists("a/b.bin")
    any_store.write_bytes("a/b.bin", b"\x00\x01payload")
    assert any_store.exists("a/b.bin")
    assert any_store.read_bytes("a/b.bin") == b"\x00\x01payload"
    any_store.write_bytes("a/b.bin", b"second")  # overwrite is the default
    assert any_store.read_bytes("a/b.bin") == b"second"
    any_store.delete("a/b.bin")
    assert not any_store.exists("a/b.bin")
    any_store.delete("a/b.bin")  # idempotent
    with pytest.raises(NotFoundError):
        any_store.read_bytes("a/b.bin")


def test_write_once_refuses_second_write(any_store: Store) -> None:
    any_store.write_bytes("once.json", b"1", overwrite=False)
    with pytest.raises(AlreadyExistsError):
        any_store.write_bytes("once.json", b"2", overwrite=False)
    assert any_store.read_bytes("once.json") == b"1"


def test_write_json_round_trip(any_store: Store) -> None:
    obj = {"images": [{"file": "ü/ä.jpg", "detections": []}], "n": 1.5}
    any_store.write_json("r/out.json", obj)
    assert json.loads(any_store.read_bytes("r/out.json")) == obj
    assert [n for n in any_store.list() if ".mdbtmp-" in n] == []  # no temp files left behind


def test_list_prefix_extensions_limit_and_order(any_store: Store) -> None:
    _fill(any_store)
    assert list(any_store.list()) == sorted(NAMES)
    assert list(any_store.list(prefix="site1/")) == sorted(n for n in NAMES if n.startswith("site1/"))
    assert list(any_store.list(prefix="site1")) == sorted(n for n in NAMES if n.startswith("site1"))
    assert list(any_store.list(prefix="site1/cam")) == sorted(n for n in NAMES if n.startswith("site1/cam"))
    jpgs = list(any_store.list(extensions=["jpg", ".JPEG"]))
    assert jpgs == sorted(n for n in NAMES if n.lower().endswith((".jpg", ".jpeg")))
    only_jpg = [n for n in sorted(NAMES) if n.lower().endswith(".jpg")]
    assert list(any_store.list(extensions=[".jpg"], limit=2)) == only_jpg[:2]
    assert list(any_store.list(limit=0)) == []
    assert list(any_store.list(prefix="nothing/")) == []


def test_store_with_prefix_is_relative(any_store: Store, tmp_path: Path) -> None:
    _fill(any_store)
    settings = make_settings(tmp_path, storage_connection_string=_conn(any_store))
    sub = open_store(any_store.child_url("site1").rstrip("/"), settings)
    assert list(sub.list()) == sorted(n[len("site1/"):] for n in NAMES if n.startswith("site1/"))
    assert sub.read_bytes("cam1/IMG_0001.JPG") == b"site1/cam1/IMG_0001.JPG"
    assert sub.child_url("cam1/x.json") == any_store.child_url("site1/cam1/x.json")


def test_child_url_has_no_secret_and_names_the_object(any_store: Store) -> None:
    any_store.write_bytes("d/e f.json", b"{}")
    url = any_store.child_url("d/e f.json")
    assert "sig=" not in url and "?" not in url
    assert url.startswith(any_store.url + "/")


def test_download_link_is_read_only_and_works(any_store: Store) -> None:
    any_store.write_bytes("res/detections.json", b'{"ok": true}')
    link = any_store.download_link("res/detections.json", timedelta(hours=1))
    if isinstance(any_store, BlobStore):
        assert "sp=r&" in link or link.endswith("sp=r") or "&sp=r" in link
        assert "se=" in link
        with urllib.request.urlopen(link) as resp:
            assert resp.read() == b'{"ok": true}'
        # read-only: a write with the same token is refused
        req = urllib.request.Request(link, data=b"x", method="PUT", headers={"x-ms-blob-type": "BlockBlob"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req)
        assert err.value.code == 403
    else:
        assert isinstance(any_store, LocalStore)
        assert link.startswith("file://")
        with urllib.request.urlopen(link) as resp:
            assert resp.read() == b'{"ok": true}'
    with pytest.raises(NotFoundError) if isinstance(any_store, LocalStore) else _nullctx():
        any_store.download_link("res/missing.json", timedelta(hours=1))


def test_invalid_names_refused(any_store: Store) -> None:
    for bad in ("../x", "a/../../x", "/abs", "", "a//b"):
        with pytest.raises(AdapterError, match="name"):
            any_store.write_bytes(bad, b"x")
        with pytest.raises(AdapterError, match="name"):
            any_store.read_bytes(bad)
    for bad_prefix in ("../", "a/../../", "/etc/"):
        with pytest.raises(AdapterError, match="prefix"):
            list(any_store.list(prefix=bad_prefix))


def test_local_store_does_not_follow_links_out(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("host secret")
    store = LocalStore(tmp_path / "root")
    store.write_bytes("in.txt", b"ok")
    (tmp_path / "root" / "link.txt").symlink_to(outside)
    assert list(store.list()) == ["in.txt"]
    with pytest.raises(NotFoundError):
        store.read_bytes("link.txt")


def test_parallel_reader_keeps_order_and_reports_errors(any_store: Store) -> None:
    _fill(any_store)
    names = [*sorted(NAMES), "missing.jpg"]
    got = list(read_many(any_store.read_bytes, names, workers=3))
    assert [n for n, _ in got] == names
    for name, data in got[:-1]:
        assert data == name.encode()
    assert isinstance(got[-1][1], NotFoundError)


class _nullctx:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> None:
        return None


def _conn(store: Store) -> str | None:
    if isinstance(store, BlobStore):
        return (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={store._account_key};BlobEndpoint={store.location.account_url};"
        )
    return None
