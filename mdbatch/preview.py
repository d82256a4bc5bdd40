"""The results preview page: one HTML file an ecologist can open offline.

Why it is built this way:
- Thumbnails are made here, at write time, so the page never needs the
  originals or a network. Small jobs get them base64-inlined (one file to mail
  around); big jobs get a sibling ``NAME_files/thumbs`` folder referenced by
  relative path, because a 100,000-image page with inlined pictures would be
  gigabytes that no browser opens.
- The page renders one page of tiles at a time (paging + ``loading=lazy``), so
  its cost in the browser does not grow with the job.
- Only boxes at or above a floor confidence are embedded (default 0.05): the
  batch format keeps boxes down to 0.005, mostly noise, which would dominate
  the file size. The slider goes from the floor to 1.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

THUMB_SIZE = 320
THUMB_QUALITY = 72
INLINE_LIMIT = 1000  # above this many images, thumbnails go to a sibling folder
DEFAULT_FLOOR = 0.05
DEFAULT_THRESHOLD = 0.2  # MDv5's typical threshold, used when the file does not say

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class PreviewStats:
    """What was written, for the CLI to report."""

    path: Path
    images: int
    thumbnails: int
    missing: int
    thumbs_mode: str  # "inline", "folder" or "none" (no image folder given)
    thumbs_dir: Path | None


class PreviewError(Exception):
    """A problem the user can fix (bad results file); the message says how."""


def _make_thumb(src: str, size: int = THUMB_SIZE, quality: int = THUMB_QUALITY,
                ) -> tuple[bytes, int, int] | None:
    """JPEG thumbnail of one image, EXIF orientation applied (boxes are relative to that)."""
    try:
        with Image.open(src) as im:
            im.draft("RGB", (size, size))  # JPEG DCT scaling: decodes at 1/2..1/8 size, fast
            im = ImageOps.exif_transpose(im)
            im = im.convert("RGB")
            im.thumbnail((size, size), Image.Resampling.BILINEAR)
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=quality, optimize=True)
            return buf.getvalue(), im.width, im.height
    except Exception:
        return None


def _thumb_job(args: tuple[str, str | None]) -> tuple[int, int] | tuple[bytes, int, int] | None:
    """Worker: write to dest (folder mode) and return the size, or return the bytes (inline mode)."""
    src, dest = args
    made = _make_thumb(src)
    if made is None:
        return None
    data, w, h = made
    if dest is None:
        return made
    tmp = dest + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, dest)
    return w, h


def load_results(path: Path) -> dict[str, Any]:
    """Read a MegaDetector batch output file, with a clear error when it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError as e:
        raise PreviewError(f"results file not found: {path}; pass the results JSON written by detect") from e
    except (OSError, ValueError) as e:
        raise PreviewError(f"cannot read results file {path} ({e}); pass a MegaDetector batch output JSON"
                           ) from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise PreviewError(f"{path} is not a MegaDetector batch output file (no 'images' list)")
    return data


def typical_threshold(results: dict[str, Any]) -> float:
    """The model's typical threshold from the file's metadata, else MDv5's 0.2."""
    meta = (results.get("info") or {}).get("detector_metadata") or {}
    value = meta.get("typical_detection_threshold")
    if isinstance(value, int | float) and 0 < value <= 1:
        return float(value)
    return DEFAULT_THRESHOLD


def summarize(results: dict[str, Any], threshold: float) -> dict[str, int]:
    """CLI summary counts: images, per category (images with a box >= threshold), empty, failed."""
    cats = {str(k): str(v) for k, v in (results.get("detection_categories") or {}).items()}
    counts: dict[str, int] = {"images": 0, "empty": 0, "failed": 0}
    for name in cats.values():
        counts[name] = 0
    for im in results.get("images", []):
        counts["images"] += 1
        if im.get("failure") is not None or im.get("detections") is None:
            counts["failed"] += 1
            continue
        seen = {str(d.get("category")) for d in im["detections"] if float(d.get("conf", 0)) >= threshold}
        if not seen:
            counts["empty"] += 1
        for c in seen:
            name = cats.get(c, c)
            counts[name] = counts.get(name, 0) + 1
    return counts


def summarize_species(results: dict[str, Any], threshold: float) -> dict[str, int]:
    """Issue 12: images per species (a box >= threshold whose top classification it is), most
    frequent first; empty when the file has no classifications."""
    names = {str(k): str(v) for k, v in (results.get("classification_categories") or {}).items()}
    counts: dict[str, int] = {}
    for im in results.get("images", []):
        if im.get("failure") is not None:
            continue
        seen = {str(d["classifications"][0][0]) for d in im.get("detections") or ()
                if float(d.get("conf", 0)) >= threshold and d.get("classifications")}
        for c in seen:
            name = names.get(c, c)
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _relpath(target: Path, start: Path) -> str:
    try:
        return Path(os.path.relpath(target, start)).as_posix()
    except ValueError:  # different drives on Windows
        return target.resolve().as_uri()


def write_preview(
    results_path: Path,
    images_root: Path | None,
    out_path: Path,
    *,
    floor: float = DEFAULT_FLOOR,
    thumbs: str = "auto",
    inline_limit: int = INLINE_LIMIT,
    workers: int | None = None,
    progress: ProgressFn | None = None,
) -> PreviewStats:
    """Write the preview page for a results file; thumbnails from images_root when given."""
    results = load_results(results_path)
    images: list[dict[str, Any]] = results["images"]
    n = len(images)
    if thumbs not in ("auto", "inline", "folder"):
        raise PreviewError(f"--thumbs must be auto, inline or folder, not {thumbs!r}")
    mode = thumbs if thumbs != "auto" else ("inline" if n <= inline_limit else "folder")
    out_path = out_path.resolve()
    out_dir = out_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    if images_root is None:  # nothing to make thumbnails from: boxes on blank tiles
        mode = "none"
    thumbs_dir = out_dir / (out_path.stem + "_files") / "thumbs" if mode == "folder" else None

    sources: list[str | None] = []
    for im in images:
        f = str(im.get("file", ""))
        if images_root is None:
            sources.append(None)
            continue
        p = Path(f) if f.startswith("/") else images_root / f
        sources.append(str(p) if p.is_file() else None)

    sizes: list[tuple[int, int] | None] = [None] * n
    inline: list[str] = [""] * n
    jobs: list[tuple[int, tuple[str, str | None]]] = []
    cache: dict[str, list[Any]] = {}
    new_cache: dict[str, list[Any]] = {}
    if thumbs_dir is not None:
        thumbs_dir.mkdir(parents=True, exist_ok=True)
        try:
            cache = json.loads((thumbs_dir / "cache.json").read_text())
        except (OSError, ValueError):
            cache = {}
    for i, src in enumerate(sources):
        if src is None:
            continue
        if thumbs_dir is None:
            jobs.append((i, (src, None)))
            continue
        dest = thumbs_dir / _thumb_name(i)
        st = os.stat(src)
        key = f"{i}"
        stamp = [images[i].get("file"), st.st_mtime_ns, st.st_size]
        hit = cache.get(key)
        if hit and hit[:3] == stamp and dest.is_file():
            sizes[i] = (int(hit[3]), int(hit[4]))
            new_cache[key] = hit
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        jobs.append((i, (src, str(dest))))

    done = n - len(jobs)
    if progress:
        progress(done, n)
    made = 0
    if jobs:
        nworkers = workers or min(8, os.cpu_count() or 1)
        if nworkers > 1 and len(jobs) > 8:
            with ProcessPoolExecutor(nworkers) as pool:
                outs: Iterable[Any] = pool.map(_thumb_job, [a for _, a in jobs], chunksize=16)
                made += _collect(jobs, outs, sizes, inline, new_cache, images, done, n, progress)
        else:
            made += _collect(jobs, map(_thumb_job, [a for _, a in jobs]), sizes, inline, new_cache,
                             images, done, n, progress)
    if thumbs_dir is not None:
        (thumbs_dir / "cache.json").write_text(json.dumps(new_cache))

    cats = {str(k): str(v) for k, v in (results.get("detection_categories") or {}).items()}
    species_names = {str(k): str(v) for k, v in (results.get("classification_categories") or {}).items()}
    species_used: dict[str, str] = {}  # issue 12: only the species the page shows (SpeciesNet has ~2,500)
    rows: list[list[Any]] = []
    for i, im in enumerate(images):
        size = sizes[i]
        w, h = size if size else (0, 0)
        failure = im.get("failure")
        dets = im.get("detections")
        if failure is not None or dets is None:
            entry: Any = str(failure if failure is not None else "no detections field")
        else:
            entry = []
            for d in dets:
                conf = float(d.get("conf", 0))
                if conf < floor:
                    continue
                b = d.get("bbox") or [0, 0, 0, 0]
                row = [str(d.get("category")), round(conf, 3), *(round(float(x), 4) for x in b[:4])]
                top = (d.get("classifications") or [None])[0]
                if isinstance(top, list | tuple) and len(top) >= 2:  # issue 12: top classification
                    sp = str(top[0])
                    species_used[sp] = species_names.get(sp, sp)
                    row += [sp, round(float(top[1]), 3)]
                entry.append(row)
            entry.sort(key=lambda e: -e[1])
        rows.append([str(im.get("file", "")), w, h, entry])

    info = results.get("info") or {}
    data = {
        "title": results_path.name,
        "categories": cats,
        "threshold": max(floor, typical_threshold(results)),
        "floor": floor,
        "detector": info.get("detector"),
        "classifier": info.get("classifier"),
        "species": dict(sorted(species_used.items(), key=lambda kv: kv[1])),
        "completed": info.get("detection_completion_time"),
        "formatVersion": info.get("format_version"),
        "thumbs": mode,
        "thumbDir": _relpath(thumbs_dir, out_dir) if thumbs_dir is not None else None,
        "imagesRel": _relpath(images_root, out_dir) if images_root is not None else None,
        "images": rows,
    }
    page = _render(data, inline if mode == "inline" else None)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out_path)
    thumbs_count = sum(1 for s in sizes if s)
    return PreviewStats(
        path=out_path, images=n, thumbnails=thumbs_count, missing=n - thumbs_count,
        thumbs_mode=mode, thumbs_dir=thumbs_dir,
    )


def _thumb_name(i: int) -> str:
    """Thumbnails by position, 1,000 to a folder (file systems dislike 100,000-entry folders)."""
    return f"{i // 1000:04d}/{i:07d}.jpg"


def _collect(jobs: list[tuple[int, tuple[str, str | None]]], outs: Iterable[Any],
             sizes: list[tuple[int, int] | None], inline: list[str], new_cache: dict[str, list[Any]],
             images: list[dict[str, Any]], done: int, n: int, progress: ProgressFn | None) -> int:
    made = 0
    for (i, (src, dest)), out in zip(jobs, outs, strict=True):
        done += 1
        if out is not None:
            made += 1
            if dest is None:
                data, w, h = out
                inline[i] = base64.b64encode(data).decode("ascii")
            else:
                w, h = out
                st = os.stat(src)
                new_cache[str(i)] = [images[i].get("file"), st.st_mtime_ns, st.st_size, w, h]
            sizes[i] = (w, h)
        if progress and (done % 50 == 0 or done == n):
            progress(done, n)
    return made


def _json_for_script(obj: Any) -> str:
    """JSON safe inside a <script> element (no '</script>' break-out from file names)."""
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _render(data: dict[str, Any], inline: list[str] | None) -> str:
    thumbs_json = _json_for_script(inline) if inline is not None else "null"
    return (
        _TEMPLATE.replace("__TITLE__", html.escape(f"Detections: {data['title']}"))
        .replace("__CSS__", _CSS)
        .replace("__JS__", _JS)
        .replace("__DATA__", _json_for_script(data))
        .replace("__THUMBS__", thumbs_json)
    )


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>__CSS__</style></head>
<body>
<header>
  <div class="title"><h1 id="title"></h1><div id="meta" class="meta"></div></div>
  <div class="controls">
    <label class="slider">Confidence &ge; <output id="thrval"></output>
      <input id="threshold" type="range" min="0" max="1" step="0.005"></label>
    <div id="filters" class="filters" role="group" aria-label="Show images with"></div>
    <label id="species-filter" hidden>Species <select id="species"><option value="">all species</option>
      </select></label>
    <label>Sort <select id="sort"><option value="file">file name</option>
      <option value="conf">highest confidence first</option></select></label>
  </div>
  <div id="counts" class="counts"></div>
</header>
<main>
  <nav class="pager" id="pager-top"></nav>
  <div id="grid" class="grid"></div>
  <nav class="pager" id="pager-bottom"></nav>
  <section id="failed-section"><h2>Failed images <span id="failed-count"></span></h2>
    <table id="failed"><thead><tr><th>file</th><th>reason</th></tr></thead><tbody></tbody></table>
    <nav class="pager" id="failed-pager"></nav>
  </section>
</main>
<div id="viewer" class="viewer" hidden><div class="viewer-inner"><div id="viewer-stage" class="stage"></div>
  <div id="viewer-caption" class="caption"></div></div></div>
<script id="data" type="application/json">__DATA__</script>
<script id="thumbs" type="application/json">__THUMBS__</script>
<script>__JS__</script>
</body></html>
"""

_CSS = """
:root{--bg:#14171a;--panel:#1d2226;--fg:#e9ecef;--muted:#98a2ab;--line:#2c3338}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header{position:sticky;top:0;z-index:5;background:var(--panel);border-bottom:1px solid var(--line);
padding:10px 16px;display:flex;flex-wrap:wrap;gap:10px 28px;align-items:center}
h1{font-size:17px;margin:0}h2{font-size:16px;margin:24px 0 8px}.meta{color:var(--muted);font-size:12px}
.controls{display:flex;flex-wrap:wrap;gap:10px 22px;align-items:center}
.slider{display:flex;align-items:center;gap:8px}.slider input{width:220px}
output{display:inline-block;min-width:3.2em;font-variant-numeric:tabular-nums;font-weight:600}
.filters{display:flex;gap:6px;flex-wrap:wrap}
.chip{display:inline-flex;align-items:center;gap:5px;border:1px solid var(--line);border-radius:14px;
padding:2px 10px 2px 6px;cursor:pointer;user-select:none}
.chip input{margin:0}.chip .sw{width:10px;height:10px;border-radius:2px;display:inline-block}
.counts{display:flex;gap:16px;flex-wrap:wrap;color:var(--muted)}
.counts b{color:var(--fg);font-variant-numeric:tabular-nums}
select{background:var(--bg);color:var(--fg);border:1px solid var(--line);border-radius:4px;padding:2px}
main{padding:12px 16px 40px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:12px}
.tile{background:var(--panel);border:1px solid var(--line);border-radius:6px;overflow:hidden;cursor:zoom-in}
.tile.failed{cursor:default;border-color:#7a2e2e}
.pic{position:relative;width:100%;background:#0b0d0e}
.pic img{position:absolute;inset:0;width:100%;height:100%;display:block}
.pic .none{position:absolute;inset:0;display:flex;align-items:center;justify-content:center;
color:var(--muted);font-size:12px;text-align:center;padding:8px}
.box{position:absolute;border:2px solid;pointer-events:none}
.box span{position:absolute;left:-2px;top:-17px;font:600 11px/15px system-ui,sans-serif;color:#000;
padding:0 3px;white-space:nowrap;border-radius:2px 2px 2px 0}
.box.low span{top:0;border-radius:0 0 2px 0}.box.right span{left:auto;right:-2px}
.cap{padding:5px 8px;font-size:12px;color:var(--muted);white-space:nowrap;overflow:hidden;
text-overflow:ellipsis}
.cap .why{color:#ff8787;white-space:normal}
.pager{display:flex;gap:8px;align-items:center;justify-content:center;margin:10px 0;color:var(--muted)}
.pager button{background:var(--panel);color:var(--fg);border:1px solid var(--line);border-radius:4px;
padding:3px 10px;cursor:pointer}.pager button:disabled{opacity:.4;cursor:default}
.pager input{width:5em;background:var(--bg);color:var(--fg);border:1px solid var(--line);border-radius:4px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}
td:first-child{font-family:ui-monospace,monospace;word-break:break-all}
.viewer{position:fixed;inset:0;background:rgba(0,0,0,.85);z-index:10;display:flex;align-items:center;
justify-content:center;cursor:zoom-out}.viewer[hidden]{display:none}
.viewer-inner{max-width:95vw;max-height:95vh}.stage{position:relative}
.stage img{display:block;max-width:95vw;max-height:88vh}.caption{padding:6px;color:var(--fg)}
.empty-note{color:var(--muted);padding:40px;text-align:center}
"""

_JS = r"""
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const T = JSON.parse(document.getElementById("thumbs").textContent);
const PAGE = 60, FPAGE = 100;
const PALETTE = {animal:"#ffa94d", person:"#4dabf7", vehicle:"#f783ac"};
const EXTRA = ["#69db7c","#ffd43b","#b197fc","#63e6be","#ff8787","#a9e34b"];
const catIds = Object.keys(D.categories);
const colour = {}; catIds.forEach((c, i) => {
  colour[c] = PALETTE[D.categories[c]] || EXTRA[i % EXTRA.length]; });
const groups = catIds.map(c => ({key: c, label: D.categories[c], colour: colour[c]}))
  .concat([{key: "empty", label: "empty", colour: "#868e96"},
          {key: "failed", label: "failed", colour: "#e03131"}]);
const SP = D.species || {}, spIds = Object.keys(SP);
const state = {thr: D.threshold, on: new Set(groups.map(g => g.key)), sort: "file", page: 0, fpage: 0,
  species: ""};
const $ = id => document.getElementById(id);
const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text; return e; };
const fmt = x => x.toLocaleString("en-US");

function thumbSrc(i) {
  if (T) return T[i] ? "data:image/jpeg;base64," + T[i] : null;
  if (!D.thumbDir || !D.images[i][1]) return null;
  const folder = String(Math.floor(i / 1000)).padStart(4, "0");
  return D.thumbDir + "/" + folder + "/" + String(i).padStart(7, "0") + ".jpg";
}
function origSrc(i) {
  if (D.imagesRel === null) return null;
  const f = D.images[i][0];
  if (/^[a-z]+:\/\//i.test(f)) return f;
  return D.imagesRel + "/" + f.split("/").map(encodeURIComponent).join("/");
}

let view = [], failedList = [];
function classify() {
  // One pass over all images: cheap even at 100,000 (boxes are pre-filtered at the floor).
  const thr = state.thr, counts = {empty: 0, failed: 0}, boxes = {}, species = {};
  catIds.forEach(c => { counts[c] = 0; boxes[c] = 0; });
  spIds.forEach(s => { species[s] = 0; });
  const sp = state.species;
  view = []; failedList = [];
  for (let i = 0; i < D.images.length; i++) {
    const dets = D.images[i][3];
    if (typeof dets === "string") { counts.failed++; failedList.push(i);
      if (state.on.has("failed") && !sp) view.push([i, -1]); continue; }
    let match = false, any = false, best = 0; const seen = {}, seenSp = {};
    for (const d of dets) {
      if (d[1] < thr) break;  // sorted by confidence, highest first
      any = true; boxes[d[0]] = (boxes[d[0]] || 0) + 1;
      if (!seen[d[0]]) { seen[d[0]] = 1; counts[d[0]] = (counts[d[0]] || 0) + 1; }
      if (state.on.has(d[0])) { match = true; if (d[1] > best) best = d[1]; }
      if (d.length > 6 && !seenSp[d[6]]) { seenSp[d[6]] = 1; species[d[6]]++; }
    }
    if (!any) { counts.empty++; if (state.on.has("empty")) match = true; }
    if (sp && !seenSp[sp]) match = false;  // species filter: an image with a box of that species
    if (match) view.push([i, best]);
  }
  if (state.sort === "conf") view.sort((a, b) => b[1] - a[1] || a[0] - b[0]);
  return {counts, boxes, species};
}

function renderCounts(c) {
  const box = $("counts"); box.replaceChildren();
  const add = (label, value, extra, key) => { const s = el("span"); s.dataset.count = key;
    s.append(label + ": "); const b = el("b", null, fmt(value)); b.className = "n"; s.append(b);
    if (extra) s.append(" " + extra); box.append(s); };
  add("images", D.images.length, null, "images");
  catIds.forEach(k => add(D.categories[k], c.counts[k], "(" + fmt(c.boxes[k]) + " boxes)", D.categories[k]));
  add("empty", c.counts.empty, null, "empty");
  add("failed", c.counts.failed, null, "failed");
  spIds.forEach(s => add(SP[s], c.species[s], null, "species:" + SP[s]));
  add("shown", view.length, null, "shown");
}

function drawBoxes(stage, i) {
  const dets = D.images[i][3];
  if (typeof dets === "string") return;
  for (const d of dets) {
    if (d[1] < state.thr) break;
    if (!state.on.has(d[0])) continue;
    const b = el("div", "box"); const c = colour[d[0]] || "#fff";
    b.dataset.category = D.categories[d[0]] || d[0];
    b.style.borderColor = c;
    b.style.left = (d[2] * 100) + "%"; b.style.top = (d[3] * 100) + "%";
    b.style.width = (d[4] * 100) + "%"; b.style.height = (d[5] * 100) + "%";
    if (d[3] < 0.06) b.classList.add("low");
    if (d[2] + d[4] > 0.75) b.classList.add("right");
    let text = (D.categories[d[0]] || d[0]) + " " + d[1].toFixed(2);
    if (d.length > 6) { b.dataset.species = SP[d[6]] || d[6];
      text += " \u00b7 " + (SP[d[6]] || d[6]) + " " + d[7].toFixed(2); }
    const lab = el("span", null, text);
    lab.style.background = c; b.append(lab); stage.append(b);
  }
}

function tile(i) {
  const [file, w, h, dets] = D.images[i];
  const t = el("div", "tile"); t.dataset.index = i;
  const pic = el("div", "pic"); pic.style.aspectRatio = (w && h) ? (w + " / " + h) : "4 / 3";
  const src = thumbSrc(i);
  if (src) { const img = el("img"); img.loading = "lazy"; img.decoding = "async"; img.alt = file;
    img.src = src; pic.append(img); }
  else pic.append(el("div", "none", typeof dets === "string" ? "failed" : "no thumbnail (image not found)"));
  drawBoxes(pic, i);
  t.append(pic);
  const cap = el("div", "cap"); cap.title = file; cap.append(file);
  if (typeof dets === "string") { t.classList.add("failed"); cap.append(el("div", "why", dets)); }
  t.append(cap);
  if (typeof dets !== "string") t.addEventListener("click", () => openViewer(i));
  return t;
}

function pager(nav, page, pages, go) {
  nav.replaceChildren();
  if (pages <= 1) return;
  const prev = el("button", null, "\u2039 prev"); prev.className = "prev";
  prev.disabled = page <= 0; prev.onclick = () => go(page - 1);
  const next = el("button", null, "next \u203a"); next.className = "next";
  next.disabled = page >= pages - 1; next.onclick = () => go(page + 1);
  const inp = el("input"); inp.type = "number"; inp.min = 1; inp.max = pages; inp.value = page + 1;
  inp.onchange = () => go(Math.max(0, Math.min(pages - 1, (parseInt(inp.value, 10) || 1) - 1)));
  nav.append(prev, "page ", inp, " of " + fmt(pages), next);
}

function renderGrid() {
  const pages = Math.max(1, Math.ceil(view.length / PAGE));
  state.page = Math.min(state.page, pages - 1);
  const grid = $("grid"); grid.replaceChildren();
  if (!view.length) grid.append(el("div", "empty-note", "No image matches the filters at this threshold."));
  const frag = document.createDocumentFragment();
  for (const [i] of view.slice(state.page * PAGE, (state.page + 1) * PAGE)) frag.append(tile(i));
  grid.append(frag);
  const go = p => { state.page = p; renderGrid(); window.scrollTo(0, 0); };
  pager($("pager-top"), state.page, pages, go); pager($("pager-bottom"), state.page, pages, go);
}

function renderFailed() {
  $("failed-section").hidden = failedList.length === 0;
  $("failed-count").textContent = "(" + fmt(failedList.length) + ")";
  const pages = Math.max(1, Math.ceil(failedList.length / FPAGE));
  state.fpage = Math.min(state.fpage, pages - 1);
  const body = $("failed").tBodies[0]; body.replaceChildren();
  for (const i of failedList.slice(state.fpage * FPAGE, (state.fpage + 1) * FPAGE)) {
    const tr = el("tr"); tr.append(el("td", null, D.images[i][0]), el("td", null, D.images[i][3]));
    body.append(tr);
  }
  pager($("failed-pager"), state.fpage, pages, p => { state.fpage = p; renderFailed(); });
}

function openViewer(i) {
  const stage = $("viewer-stage"); stage.replaceChildren();
  const img = el("img"); const thumb = thumbSrc(i), orig = origSrc(i);
  img.src = orig || thumb || ""; img.onerror = () => { if (thumb && img.src !== thumb) img.src = thumb; };
  stage.append(img); drawBoxes(stage, i);
  $("viewer-caption").textContent = D.images[i][0];
  $("viewer").hidden = false;
}
$("viewer").addEventListener("click", () => { $("viewer").hidden = true; });
document.addEventListener("keydown", e => { if (e.key === "Escape") $("viewer").hidden = true; });

function update(resetPage) {
  if (resetPage) state.page = 0;
  const c = classify(); renderCounts(c); renderGrid(); renderFailed();
  $("thrval").textContent = state.thr.toFixed(3);
}

function init() {
  $("title").textContent = D.title;
  const bits = [];
  if (D.detector) bits.push("detector " + D.detector);
  if (D.classifier) bits.push("classifier " + D.classifier);
  if (D.completed) bits.push("completed " + D.completed);
  if (D.formatVersion) bits.push("format " + D.formatVersion);
  bits.push("boxes below " + D.floor + " not included");
  $("meta").textContent = bits.join(" \u00b7 ");
  const s = $("threshold"); s.min = D.floor; s.value = state.thr;
  let pending = false;
  s.addEventListener("input", () => { state.thr = parseFloat(s.value);
    if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; update(true); }); } });
  const f = $("filters");
  for (const g of groups) {
    const lab = el("label", "chip"); const cb = el("input"); cb.type = "checkbox"; cb.checked = true;
    cb.value = g.key; cb.dataset.group = g.label;
    cb.onchange = () => { if (cb.checked) state.on.add(g.key); else state.on.delete(g.key); update(true); };
    const sw = el("span", "sw"); sw.style.background = g.colour;
    lab.append(cb, sw, g.label); f.append(lab);
  }
  $("sort").onchange = e => { state.sort = e.target.value; update(true); };
  if (spIds.length) {
    const sel = $("species");
    for (const s of spIds) { const o = el("option", null, SP[s]); o.value = s; sel.append(o); }
    sel.onchange = e => { state.species = e.target.value; update(true); };
    $("species-filter").hidden = false;
  }
  update(true);
  document.body.dataset.ready = "1";
}
init();
"""
