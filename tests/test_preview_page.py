"""The results preview page: what it embeds, and what a real browser shows (Debian chromium, headless)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mdbatch.preview import summarize, write_preview

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CATS = {"1": "animal", "2": "person", "3": "vehicle"}


def _results(images: list[dict[str, Any]]) -> dict[str, Any]:
    return {"info": {"format_version": "1.6", "detector": "test-rects",
                     "detector_metadata": {"typical_detection_threshold": 0.2,
                                           "conservative_detection_threshold": 0.05}},
            "detection_categories": CATS, "images": images}


def _det(cat: str, conf: float, box: list[float]) -> dict[str, Any]:
    return {"category": cat, "conf": conf, "bbox": box}


@pytest.fixture()
def photo_dir(tmp_path: Path, camera_trap_dir: Path) -> Path:
    """Four real photos in a subfolder layout, as a camera-trap card would have them."""
    d = tmp_path / "photos"
    (d / "site1").mkdir(parents=True)
    names = sorted(p.name for p in camera_trap_dir.glob("*.jpg"))[:4]
    for i, n in enumerate(names):
        shutil.copy(camera_trap_dir / n, d / ("site1" if i % 2 else ".") / n)
    return d


def _known_results(photo_dir: Path) -> dict[str, Any]:
    files = sorted(p.relative_to(photo_dir).as_posix() for p in photo_dir.rglob("*.jpg"))
    assert len(files) == 4
    return _results([
        {"file": files[0], "detections": [_det("1", 0.95, [0.1, 0.1, 0.3, 0.3]),
                                          _det("2", 0.3, [0.5, 0.5, 0.2, 0.2]),
                                          _det("1", 0.01, [0.0, 0.0, 0.1, 0.1])]},
        {"file": files[1], "detections": [_det("3", 0.12, [0.2, 0.2, 0.5, 0.4])]},
        {"file": files[2], "detections": []},
        {"file": files[3], "detections": [_det("1", 0.6, [0.6, 0.1, 0.3, 0.5])]},
        {"file": "site2/missing.jpg", "failure": "image access failure"},
        {"file": "bad</script><b>x.jpg", "failure": "cannot decode <image>"},
    ])


def _page_data(html: str) -> dict[str, Any]:
    m = re.search(r'<script id="data" type="application/json">(.*?)</script>', html, re.S)
    assert m, "data block missing"
    return json.loads(m.group(1))


def test_summary_counts_use_the_threshold(photo_dir: Path) -> None:
    res = _known_results(photo_dir)
    base = {"images": 6, "animal": 2, "person": 1, "failed": 2}
    assert summarize(res, 0.2) == {**base, "vehicle": 0, "empty": 2}
    assert summarize(res, 0.1) == {**base, "vehicle": 1, "empty": 1}


def test_inline_page_is_one_file_with_boxes_above_the_floor(tmp_path: Path, photo_dir: Path) -> None:
    rpath = tmp_path / "results.json"
    rpath.write_text(json.dumps(_known_results(photo_dir)))
    stats = write_preview(rpath, photo_dir, tmp_path / "out" / "preview.html", floor=0.05)
    assert (stats.images, stats.thumbnails, stats.missing, stats.thumbs_mode) == (6, 4, 2, "inline")
    html = stats.path.read_text()
    assert "http://" not in html and "https://" not in html, "the page must not need the network"
    assert "</script><b>" not in html, "file names must not break out of the data block"
    data = _page_data(html)
    assert data["threshold"] == 0.2 and data["floor"] == 0.05
    rows = {r[0]: r for r in data["images"]}
    first = data["images"][0]
    assert [d[:2] for d in first[3]] == [["1", 0.95], ["2", 0.3]], "box at 0.01 is below the floor"
    assert rows["site2/missing.jpg"][3] == "image access failure"
    assert rows["bad</script><b>x.jpg"][3] == "cannot decode <image>"
    assert all(r[1] > 0 and r[2] > 0 for r in data["images"] if not isinstance(r[3], str))
    thumbs = json.loads(re.search(r'<script id="thumbs" type="application/json">(.*?)</script>',
                                  html, re.S).group(1))
    assert sum(1 for t in thumbs if t) == 4
    assert not (tmp_path / "out" / "preview_files").exists()


def test_folder_mode_writes_relative_thumbnails_and_reuses_them(tmp_path: Path, photo_dir: Path) -> None:
    rpath = tmp_path / "results.json"
    rpath.write_text(json.dumps(_known_results(photo_dir)))
    out = tmp_path / "preview.html"
    stats = write_preview(rpath, photo_dir, out, thumbs="folder")
    assert stats.thumbs_mode == "folder" and stats.thumbs_dir == tmp_path / "preview_files" / "thumbs"
    jpgs = sorted(stats.thumbs_dir.rglob("*.jpg"))
    assert len(jpgs) == 4
    data = _page_data(out.read_text())
    assert data["thumbDir"] == "preview_files/thumbs" and data["imagesRel"] == "photos"
    before = {p: p.stat().st_mtime_ns for p in jpgs}
    write_preview(rpath, photo_dir, out, thumbs="folder")
    assert {p: p.stat().st_mtime_ns for p in jpgs} == before, "unchanged images are not thumbnailed again"


def test_auto_mode_switches_to_a_folder_for_big_jobs(tmp_path: Path, photo_dir: Path) -> None:
    files = sorted(p.relative_to(photo_dir).as_posix() for p in photo_dir.rglob("*.jpg"))
    res = _results([{"file": files[i % 4], "detections": []} for i in range(12)])
    rpath = tmp_path / "r.json"
    rpath.write_text(json.dumps(res))
    stats = write_preview(rpath, photo_dir, tmp_path / "p.html", inline_limit=10)
    assert stats.thumbs_mode == "folder" and stats.thumbnails == 12


# --- in a real browser --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} not found: install Debian's chromium (./run setup does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open(browser: Any, page_path: Path) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(page_path.as_uri())
    page.wait_for_selector("body[data-ready='1']")
    _wait_visible_images(page)
    errors.extend(u for u in requests if not u.startswith(("file://", "data:")))
    return page, errors


def _wait_visible_images(page: Any) -> None:
    """Thumbnails load lazily: wait for the ones on screen."""
    page.wait_for_function("[...document.images].filter(i => i.getBoundingClientRect().top < innerHeight)"
                           ".every(i => i.complete)")


def _count(page: Any, key: str) -> int:
    return int(page.locator(f"[data-count='{key}'] b").inner_text().replace(",", ""))


def _slide(page: Any, value: float) -> None:
    page.eval_on_selector("#threshold", "(s, v) => { s.value = v; s.dispatchEvent(new Event('input')); }",
                          str(value))
    page.wait_for_function(f"document.getElementById('thrval').textContent === '{value:.3f}'")


@pytest.mark.browser
def test_browser_slider_filter_and_failures(browser: Any, tmp_path: Path, photo_dir: Path) -> None:
    rpath = tmp_path / "results.json"
    rpath.write_text(json.dumps(_known_results(photo_dir)))
    out = tmp_path / "preview.html"
    write_preview(rpath, photo_dir, out)
    page, errors = _open(browser, out)
    try:
        # at the typical threshold 0.2: boxes 0.95, 0.3 and 0.6
        assert page.locator(".tile").count() == 6
        assert page.locator(".box").count() == 3
        assert (_count(page, "animal"), _count(page, "person"), _count(page, "vehicle")) == (2, 1, 0)
        assert (_count(page, "empty"), _count(page, "failed")) == (2, 2)
        loaded = page.eval_on_selector_all(".tile img", "imgs => imgs.map(i => i.naturalWidth)")
        assert len(loaded) == 4 and all(w > 0 for w in loaded), "thumbnails must render"
        labels = page.locator(".box span").all_inner_texts()
        assert sorted(labels) == ["animal 0.60", "animal 0.95", "person 0.30"]
        page.screenshot(path=str(tmp_path / "preview.png"))
        assert (tmp_path / "preview.png").stat().st_size > 10_000

        _slide(page, 0.1)  # the 0.12 vehicle appears
        assert page.locator(".box").count() == 4 and _count(page, "vehicle") == 1
        assert page.locator(".box[data-category='vehicle']").count() == 1
        _slide(page, 0.7)  # only the 0.95 animal is left
        assert page.locator(".box").count() == 1
        assert (_count(page, "animal"), _count(page, "person"), _count(page, "empty")) == (1, 0, 3)

        page.uncheck("input[data-group='empty']")  # category filter: hide empty images
        assert page.locator(".tile").count() == 3 and _count(page, "shown") == 3
        page.uncheck("input[data-group='failed']")
        assert page.locator(".tile").count() == 1
        page.uncheck("input[data-group='animal']")
        assert page.locator(".tile").count() == 0 and page.locator(".box").count() == 0

        rows = page.locator("#failed tbody tr").all_inner_texts()
        assert len(rows) == 2
        assert any("bad</script><b>x.jpg" in r and "cannot decode <image>" in r for r in rows)
        assert errors == []
    finally:
        page.close()


@pytest.mark.browser
def test_browser_pages_through_many_images_with_folder_thumbnails(browser: Any, tmp_path: Path,
                                                                  photo_dir: Path) -> None:
    files = sorted(p.relative_to(photo_dir).as_posix() for p in photo_dir.rglob("*.jpg"))
    res = _results([{"file": files[i % 4], "detections": [_det("1", 0.9, [0.1, 0.1, 0.2, 0.2])]}
                    for i in range(130)])
    rpath = tmp_path / "many.json"
    rpath.write_text(json.dumps(res))
    out = tmp_path / "many.html"
    write_preview(rpath, photo_dir, out, thumbs="folder")
    page, errors = _open(browser, out)
    try:
        assert page.locator(".tile").count() == 60, "one page of tiles, not all 130"
        assert "of 3" in page.locator("#pager-top").inner_text()
        page.locator("#pager-top button.next").click()
        page.wait_for_function("document.querySelectorAll('.tile')[0].dataset.index === '60'")
        page.locator("#pager-top button.next").click()
        page.wait_for_function("document.querySelectorAll('.tile').length === 10")
        _wait_visible_images(page)
        widths = page.eval_on_selector_all(".tile img", "imgs => imgs.map(i => i.naturalWidth)")
        assert len(widths) == 10 and all(w > 0 for w in widths), "relative thumbnail links must load"
        assert errors == []
    finally:
        page.close()
