"""The preview page with classifications: each box's top species on its label, a species filter,
species counts (a real browser: Debian chromium, headless)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mdbatch.preview import summarize_species, write_preview
from tests.test_preview_page import _count, _open, _page_data, _results, _slide, browser, photo_dir  # noqa: F401

SPECIES = {"0": "fox", "1": "wolf", "2": "elk", "3": "bear"}


def _det(cat: str, conf: float, box: list[float], top: list[Any] | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"category": cat, "conf": conf, "bbox": box}
    if top is not None:
        d["classifications"] = [top, ["3", 0.01]]
    return d


def _classified(photo_dir: Path) -> dict[str, Any]:  # noqa: F811
    files = sorted(p.relative_to(photo_dir).as_posix() for p in photo_dir.rglob("*.jpg"))
    res = _results([
        {"file": files[0], "detections": [_det("1", 0.95, [0.1, 0.1, 0.3, 0.3], ["0", 0.91]),
                                          _det("1", 0.4, [0.5, 0.5, 0.2, 0.2], ["2", 0.77])]},
        {"file": files[1], "detections": [_det("1", 0.12, [0.2, 0.2, 0.5, 0.4], ["1", 0.66])]},
        {"file": files[2], "detections": [_det("2", 0.8, [0.2, 0.2, 0.2, 0.4])]},
        {"file": files[3], "detections": [_det("1", 0.6, [0.6, 0.1, 0.3, 0.5], ["0", 0.88])]},
        {"file": "gone.jpg", "failure": "image access failure"},
    ])
    res["info"]["classifier"] = "colours"
    res["classification_categories"] = SPECIES
    return res


def test_species_counts(photo_dir: Path) -> None:  # noqa: F811
    res = _classified(photo_dir)
    assert summarize_species(res, 0.2) == {"fox": 2, "elk": 1}
    assert summarize_species(res, 0.1) == {"fox": 2, "elk": 1, "wolf": 1}
    del res["classification_categories"]
    for im in res["images"]:
        for d in im.get("detections") or ():
            d.pop("classifications", None)
    assert summarize_species(res, 0.1) == {}


def test_page_embeds_only_used_species(tmp_path: Path, photo_dir: Path) -> None:  # noqa: F811
    rpath = tmp_path / "r.json"
    rpath.write_text(json.dumps(_classified(photo_dir)))
    data = _page_data(write_preview(rpath, photo_dir, tmp_path / "p.html").path.read_text())
    assert data["species"] == {"2": "elk", "0": "fox", "1": "wolf"}  # bear only as a second guess
    assert data["classifier"] == "colours"


@pytest.mark.browser
def test_browser_species_labels_and_filter(browser: Any, tmp_path: Path, photo_dir: Path) -> None:  # noqa: F811
    rpath = tmp_path / "results.json"
    rpath.write_text(json.dumps(_classified(photo_dir)))
    out = tmp_path / "preview.html"
    write_preview(rpath, photo_dir, out)
    page, errors = _open(browser, out)
    try:
        labels = sorted(page.locator(".box span").all_inner_texts())
        assert labels == ["animal 0.40 \u00b7 elk 0.77", "animal 0.60 \u00b7 fox 0.88",
                          "animal 0.95 \u00b7 fox 0.91", "person 0.80"]
        counts = [_count(page, f"species:{s}") for s in ("fox", "elk", "wolf")]
        assert counts == [2, 1, 0]
        assert page.locator("#species-filter").is_visible()
        page.select_option("#species", label="fox")
        assert page.locator(".tile").count() == 2 and _count(page, "shown") == 2
        page.select_option("#species", label="elk")
        assert page.locator(".tile").count() == 1
        assert page.locator(".box[data-species='elk']").count() == 1
        page.select_option("#species", label="wolf")
        assert page.locator(".tile").count() == 0
        _slide(page, 0.1)  # the 0.12 box (wolf) now counts
        assert page.locator(".tile").count() == 1 and _count(page, "species:wolf") == 1
        page.select_option("#species", value="")
        assert page.locator(".tile").count() == 5
        assert errors == []
    finally:
        page.close()
