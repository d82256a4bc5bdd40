"""Tiny ONNX models built on the fly, for tests and the CLI's ``demo`` model.

``build_rect_model`` makes a detector whose answer is known in advance: it
reports one box per saturated colour present (pure red = animal, pure green =
person, pure blue = vehicle), so tests anywhere in the tree can plant
rectangles on real photos with :func:`draw_rect` and assert exact boxes.
``build_random_yolo`` makes a random-weight conv net with the output shape of a
YOLO detector (many low-confidence boxes) for shape, batching and layout tests.

Only numpy is imported at module level; ``onnx`` is imported when a model is
built, so importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

#: category id -> (name, RGB colour) of the rectangle model.
RECT_COLOURS: dict[str, tuple[str, tuple[int, int, int]]] = {
    "1": ("animal", (255, 0, 0)),
    "2": ("person", (0, 255, 0)),
    "3": ("vehicle", (0, 0, 255)),
}
RECT_CONF = 0.875  # exactly representable in float32, so it survives truncation to 3 decimals
#: morphological opening (erode then dilate) with this square kernel, in model pixels:
#: keeps solid rectangles exactly, drops thin lines such as annotation boxes drawn on photos.
RECT_OPEN = 7
#: a pixel belongs to colour c when x_c - max(other channels) > this (0..1 scale):
#: robust to bilinear blur at edges and to ordinary photo content.
RECT_MARGIN = 0.6
LAYOUTS = ("yolov5", "ultralytics")
CATEGORIES = {k: v[0] for k, v in RECT_COLOURS.items()}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(model_path: Path, **fields: Any) -> Path:
    """Write the model manifest ``<model file>.json`` beside the model (sha256 filled in)."""
    model_path = Path(model_path)
    manifest = {"format": "mdbatch-model/1", **fields, "sha256": _sha256(model_path)}
    out = Path(str(model_path) + ".json")
    out.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out


def _names_metadata(names: list[str]) -> str:
    """ONNX metadata ``names`` the way YOLOv5/ultralytics exports write it (a Python dict repr)."""
    return repr(dict(enumerate(names)))


def build_rect_model(path: Path, layout: str = "yolov5", input_size: int = 1280,
                     stride: int = 64, name: str | None = None) -> Path:
    """Build the coloured-rectangle detector at ``path`` (+ manifest ``path.json``); returns ``path``.

    ``name`` (manifest name and ``info.detector``) defaults to the file name without ``.onnx``.
    Note: several photos in ../shared/testdata/camera-traps carry red annotation boxes with
    filled labels (see its SOURCES.md); plant red only on the clean ones.

    Input ``images`` [B,3,H,W] float RGB in 0..1 (dynamic B/H/W). Output ``output0``:
    ``yolov5`` [B,3,8] (cx, cy, w, h, obj, 3 class scores) or ``ultralytics`` [B,7,3]
    (cx, cy, w, h, 3 class scores). Boxes are the tight pixel extent of each colour
    (right/bottom edges exclusive), in input pixels, after a morphological
    opening that ignores parts thinner than ``RECT_OPEN`` model pixels.
    """
    import onnx
    from onnx import TensorProto, helper

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    f32 = TensorProto.FLOAT

    def const(n: str, arr: Any, dtype: Any = np.float32) -> onnx.TensorProto:
        return onnx.numpy_helper.from_array(np.asarray(arr, dtype=dtype), n)

    inits = [
        const("margin", RECT_MARGIN),
        const("one", 1.0),
        const("big", 1.0e6),
        const("zero_i", 0, np.int64),
        const("one_i", 1, np.int64),
        const("idx_h", [2], np.int64),
        const("idx_w", [3], np.int64),
        const("conf", RECT_CONF),
        const("half", 0.5),
        const("eye", np.eye(3)[None]),  # [1,3,3]
        const("split3", [1, 1, 1], np.int64),
    ]
    n: list[onnx.NodeProto] = [
        helper.make_node("Split", ["images", "split3"], ["r", "g", "b"], axis=1),
    ]
    chans = {"r": ("g", "b"), "g": ("r", "b"), "b": ("r", "g")}
    masks = []
    for c, (o1, o2) in chans.items():
        n += [
            helper.make_node("Max", [o1, o2], [f"{c}_oth"]),
            helper.make_node("Sub", [c, f"{c}_oth"], [f"{c}_d"]),
            helper.make_node("Greater", [f"{c}_d", "margin"], [f"{c}_mb"]),
            helper.make_node("Cast", [f"{c}_mb"], [f"{c}_m"], to=f32),
        ]
        masks.append(f"{c}_m")
    n += [
        helper.make_node("Concat", masks, ["masks0"], axis=1),  # [B,3,H,W]
        # opening: min-pool (as -maxpool(-x)) then max-pool, same size
        helper.make_node("Neg", ["masks0"], ["neg0"]),
        helper.make_node("MaxPool", ["neg0"], ["neg1"], kernel_shape=[RECT_OPEN, RECT_OPEN],
                         pads=[RECT_OPEN // 2] * 4, strides=[1, 1]),
        helper.make_node("Neg", ["neg1"], ["eroded"]),
        helper.make_node("MaxPool", ["eroded"], ["masks"], kernel_shape=[RECT_OPEN, RECT_OPEN],
                         pads=[RECT_OPEN // 2] * 4, strides=[1, 1]),
        helper.make_node("ReduceMax", ["masks"], ["colany"], axes=[2], keepdims=0),  # [B,3,W]
        helper.make_node("ReduceMax", ["masks"], ["rowany"], axes=[3], keepdims=0),  # [B,3,H]
        helper.make_node("ReduceMax", ["colany"], ["present"], axes=[2], keepdims=0),  # [B,3]
        helper.make_node("Shape", ["images"], ["shp"]),
        helper.make_node("Gather", ["shp", "idx_h"], ["h1"], axis=0),
        helper.make_node("Gather", ["shp", "idx_w"], ["w1"], axis=0),
        helper.make_node("Squeeze", ["h1"], ["h0"]),
        helper.make_node("Squeeze", ["w1"], ["w0"]),
    ]
    edges = {}
    for axis_name, anym, size in (("x", "colany", "w0"), ("y", "rowany", "h0")):
        a = axis_name
        n += [
            helper.make_node("Range", ["zero_i", size, "one_i"], [f"{a}_ri"]),
            helper.make_node("Cast", [f"{a}_ri"], [f"{a}_r"], to=f32),
            helper.make_node("Sub", ["one", anym], [f"{a}_not"]),
            helper.make_node("Mul", [f"{a}_not", "big"], [f"{a}_pen"]),
            helper.make_node("Add", [f"{a}_r", f"{a}_pen"], [f"{a}_lo_in"]),
            helper.make_node("ReduceMin", [f"{a}_lo_in"], [f"{a}_lo"], axes=[2], keepdims=0),
            helper.make_node("Sub", [f"{a}_r", f"{a}_pen"], [f"{a}_hi_in"]),
            helper.make_node("ReduceMax", [f"{a}_hi_in"], [f"{a}_hi0"], axes=[2], keepdims=0),
            helper.make_node("Add", [f"{a}_hi0", "one"], [f"{a}_hi"]),
            # centre and size, zeroed for absent colours (keeps numbers finite)
            helper.make_node("Add", [f"{a}_lo", f"{a}_hi"], [f"{a}_s"]),
            helper.make_node("Mul", [f"{a}_s", "half"], [f"{a}_c0"]),
            helper.make_node("Mul", [f"{a}_c0", "present"], [f"{a}_c"]),
            helper.make_node("Sub", [f"{a}_hi", f"{a}_lo"], [f"{a}_len0"]),
            helper.make_node("Mul", [f"{a}_len0", "present"], [f"{a}_len"]),
        ]
        edges[a] = (f"{a}_c", f"{a}_len")
    cols = [edges["x"][0], edges["y"][0], edges["x"][1], edges["y"][1]]
    n += [helper.make_node("Unsqueeze", [c, "idx_two"], [f"{c}_u"]) for c in cols]
    inits.append(const("idx_two", [2], np.int64))
    n += [
        helper.make_node("Unsqueeze", ["present", "idx_two"], ["present_u"]),  # [B,3,1]
        helper.make_node("Mul", ["present_u", "eye"], ["cls01"]),  # [B,3,3]
    ]
    box_cols = [f"{c}_u" for c in cols]
    if layout == "yolov5":
        n += [
            helper.make_node("Mul", ["present_u", "conf"], ["obj"]),
            helper.make_node("Concat", [*box_cols, "obj", "cls01"], ["output0"], axis=2),
        ]
        out_shape: list[Any] = ["batch", 3, 8]
    else:
        n += [
            helper.make_node("Mul", ["cls01", "conf"], ["cls"]),
            helper.make_node("Concat", [*box_cols, "cls"], ["pred"], axis=2),
            helper.make_node("Transpose", ["pred"], ["output0"], perm=[0, 2, 1]),
        ]
        out_shape = ["batch", 7, 3]
    return _save_detector(path, n, "rect_detector", inits, out_shape, list(CATEGORIES.values()),
                          stride=stride, input_size=input_size, layout=layout, name=name)


def build_random_yolo(path: Path, layout: str = "yolov5", nc: int = 3, input_size: int = 256,
                      stride: int = 32, width: int = 8, seed: int = 0,
                      name: str | None = None) -> Path:
    """A random-weight YOLO-shaped detector (dynamic B/H/W) at ``path`` (+ manifest).

    Conv stack of total stride ``stride`` -> ``5+nc`` (or ``4+nc``) channels per
    grid cell, sigmoid; boxes scaled to the input size. ``yolov5``: [B, N, 5+nc];
    ``ultralytics``: [B, 4+nc, N], N = (H/stride)*(W/stride).
    """
    import onnx
    from onnx import TensorProto, helper

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if stride & (stride - 1) or stride < 2:
        raise ValueError("stride must be a power of two >= 2")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    f32 = TensorProto.FLOAT
    nout = (5 if layout == "yolov5" else 4) + nc
    inits = []
    nodes = []
    prev, cin = "images", 3
    n_down = int(np.log2(stride))
    for i in range(n_down):
        cout = width
        w = rng.normal(0, 1.0 / np.sqrt(cin * 9), (cout, cin, 3, 3)).astype(np.float32)
        b = rng.normal(0, 0.1, (cout,)).astype(np.float32)
        inits += [onnx.numpy_helper.from_array(w, f"w{i}"), onnx.numpy_helper.from_array(b, f"b{i}")]
        nodes += [
            helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[3, 3],
                             strides=[2, 2], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"c{i}"], [f"a{i}"]),
        ]
        prev, cin = f"a{i}", cout
    w = rng.normal(0, 1.5 / np.sqrt(cin), (nout, cin, 1, 1)).astype(np.float32)
    b = rng.normal(-1.0, 0.5, (nout,)).astype(np.float32)
    inits += [onnx.numpy_helper.from_array(w, "wh"), onnx.numpy_helper.from_array(b, "bh")]
    nodes += [
        helper.make_node("Conv", [prev, "wh", "bh"], ["head"], kernel_shape=[1, 1]),
        helper.make_node("Sigmoid", ["head"], ["sig"]),  # [B,nout,h,w]
        helper.make_node("Shape", ["images"], ["shp"]),
        helper.make_node("Slice", ["shp", "s_a", "s_b"], ["hw_i"]),  # [H, W]
        helper.make_node("Cast", ["hw_i"], ["hw"], to=f32),
        helper.make_node("Reshape", ["sig", "rs"], ["flat"]),  # [B,nout,N]
        helper.make_node("Split", ["flat", "split"], ["xy", "bwh", "rest"], axis=1),
        # scale xy by (W, H), wh by (W, H)/4 -> input pixels
        helper.make_node("Gather", ["hw", "rev"], ["wh_scale"], axis=0),  # [W, H]
        helper.make_node("Unsqueeze", ["wh_scale", "ax1"], ["wh_scale_u"]),  # [2,1]
        helper.make_node("Mul", ["xy", "wh_scale_u"], ["xy_px"]),
        helper.make_node("Mul", ["bwh", "wh_scale_u"], ["wh_px0"]),
        helper.make_node("Mul", ["wh_px0", "quarter"], ["wh_px"]),
        helper.make_node("Concat", ["xy_px", "wh_px", "rest"], ["pred"], axis=1),  # [B,nout,N]
    ]
    inits += [
        onnx.numpy_helper.from_array(np.array([2], np.int64), "s_a"),
        onnx.numpy_helper.from_array(np.array([4], np.int64), "s_b"),
        onnx.numpy_helper.from_array(np.array([0, nout, -1], np.int64), "rs"),
        onnx.numpy_helper.from_array(np.array([2, 2, nout - 4], np.int64), "split"),
        onnx.numpy_helper.from_array(np.array([1, 0], np.int64), "rev"),
        onnx.numpy_helper.from_array(np.array([1], np.int64), "ax1"),
        onnx.numpy_helper.from_array(np.array(0.25, np.float32), "quarter"),
    ]
    if layout == "yolov5":
        nodes.append(helper.make_node("Transpose", ["pred"], ["output0"], perm=[0, 2, 1]))
        out_shape: list[Any] = ["batch", "anchors", nout]
    else:
        nodes.append(helper.make_node("Identity", ["pred"], ["output0"]))
        out_shape = ["batch", nout, "anchors"]
    names = ["animal", "person", "vehicle"][:nc] + [f"class{i}" for i in range(3, nc)]
    return _save_detector(path, nodes, "random_yolo", inits, out_shape, names,
                          stride=stride, input_size=input_size, layout=layout, name=name)


def _save_detector(path: Path, nodes: list[Any], graph_name: str, inits: list[Any], out_shape: list[Any],
                   names: list[str], *, stride: int, input_size: int, layout: str,
                   name: str | None) -> Path:
    """Wrap `nodes` as a checked opset-17 model with an `images` input and an `output0` output,
    the metadata YOLO exports carry (names, stride), saved at `path` with its manifest beside it."""
    import onnx
    from onnx import TensorProto, helper

    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, graph_name,
        [helper.make_tensor_value_info("images", f32, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("output0", f32, out_shape)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="mdbatch-scoring-demo")
    model.ir_version = 8
    helper.set_model_props(model, {"names": _names_metadata(names), "stride": str(stride)})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    name = name or path.name.removesuffix(".onnx")
    write_manifest(path, name=name, detector=name, input_size=input_size,
                   stride=stride, pad_value=114, layout=layout,
                   categories={str(i + 1): nm for i, nm in enumerate(names)},
                   typical_detection_threshold=0.2, conservative_detection_threshold=0.05)
    return path


# --- planting rectangles -------------------------------------------------------------------------

def rect_pixels(width: int, height: int, box_norm: tuple[float, float, float, float]
                ) -> tuple[int, int, int, int]:
    """Pixel rectangle (x0, y0, x1, y1), right/bottom exclusive, that ``draw_rect`` paints."""
    x, y, w, h = box_norm
    x0 = round(x * width)
    y0 = round(y * height)
    x1 = round((x + w) * width)
    y1 = round((y + h) * height)
    x0, x1 = max(0, min(width, x0)), max(0, min(width, x1))
    y0, y1 = max(0, min(height, y0)), max(0, min(height, y1))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {box_norm} is empty on a {width}x{height} image")
    return x0, y0, x1, y1


def draw_rect(img: np.ndarray, category: str, box_norm: tuple[float, float, float, float]) -> None:
    """Paint the category's pure colour over ``box_norm`` (normalized x, y, w, h) of an HxWx3 RGB image."""
    if category not in RECT_COLOURS:
        raise ValueError(f"unknown category {category!r}; use one of {sorted(RECT_COLOURS)}")
    h, w = img.shape[:2]
    x0, y0, x1, y1 = rect_pixels(w, h, box_norm)
    img[y0:y1, x0:x1] = RECT_COLOURS[category][1]


def expected_box(width: int, height: int, box_norm: tuple[float, float, float, float]
                 ) -> list[float]:
    """The normalized [x, y, w, h] of the rectangle ``draw_rect`` painted (full precision).

    Results carry 4 decimals, truncated like MegaDetector; compare within
    :func:`box_tolerance`.
    """
    x0, y0, x1, y1 = rect_pixels(width, height, box_norm)
    return [x0 / width, y0 / height, (x1 - x0) / width, (y1 - y0) / height]


def box_tolerance(width: int, height: int, input_size: int = 1280) -> float:
    """How far (normalized) a reported edge may sit from the painted one.

    The model sees the image scaled to ``input_size`` on the long side, so an
    edge is known to one model pixel = long_side/input_size original pixels,
    plus one pixel of MegaDetector's rounding to whole pixels, plus the
    4-decimal truncation of the output. Tests compare with this; painting rectangles on a
    grid that maps to whole model pixels (see :func:`grid_box`) makes it exact.
    """
    long_side = max(width, height)
    px = long_side / input_size + 1.0
    return px / min(width, height) + 1e-4


def grid_box(width: int, height: int, box_norm: tuple[float, float, float, float],
             input_size: int = 1280) -> tuple[float, float, float, float]:
    """Snap ``box_norm`` so its edges fall on whole model-input pixels where possible.

    With such edges the rect model reports the painted rectangle to the pixel.
    """
    scale = input_size / max(width, height)
    out = []
    for v, dim in ((box_norm[0], width), (box_norm[1], height),
                   (box_norm[0] + box_norm[2], width), (box_norm[1] + box_norm[3], height)):
        model_px = round(v * dim * scale)
        out.append(round(model_px / scale) / dim)
    x0, y0, x1, y1 = out
    return (x0, y0, x1 - x0, y1 - y0)
