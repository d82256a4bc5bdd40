"""Half-precision (fp16) variants of exported detectors.

Why: on a GPU the convolutions are what the service pays for, and tensor cores run them in fp16
at about twice the fp32 rate with half the memory traffic. The fp32 model stays the parity
reference (1 px / 0.001 conf against MegaDetector); the fp16 variant is held to 2 px / 0.01.

What is converted: every float initializer and node from which a further ``Conv`` can still be
reached (the backbone and neck: nearly all of the FLOPs). The detection-head convolutions (1x1,
no Conv after them) and the decode tail (sigmoid, grid/anchor arithmetic, concat) stay fp32, so
box coordinates up to 1280 px are not rounded to fp16's 0.5-1 px steps and the logits that set
box positions are not computed from fp16-rounded head weights; measured on the test model this
cut the largest box difference from 3 px to 1 px. Inputs and outputs stay fp32
(``keep_io_types``), so the pipeline (letterbox buffers, NMS) is unchanged.

Uses onnxconverter-common's float16 converter (pinned in requirements-dev/-torch) for the
conversion itself: Cast insertion at the fp32/fp16 borders, Resize/shape ops left alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .manifest import file_sha256, manifest_path

PRECISIONS = ("fp32", "fp16")
FP16_SUFFIX = ".fp16.onnx"


class PrecisionError(Exception):
    """A precision that cannot be provided (unknown name, converter missing, bad model)."""


def fp16_path(model_path: Path) -> Path:
    """Where the fp16 variant of ``model_path`` lives: ``NAME.fp16.onnx`` beside it."""
    model_path = Path(model_path)
    if model_path.name.endswith(FP16_SUFFIX):
        return model_path
    return model_path.with_name(model_path.name.removesuffix(".onnx") + FP16_SUFFIX)


def _tail_nodes(graph: Any) -> list[str]:
    """Names of nodes from which no Conv is reachable: the detection-head convolutions and the
    decode tail after them, kept in fp32.

    ONNX graphs list nodes in topological order, so one pass from the end settles each node
    after all of its consumers.
    """
    consumers: dict[str, list[int]] = {}
    for idx, n in enumerate(graph.node):
        for i in n.input:
            consumers.setdefault(i, []).append(idx)
    reaches = [False] * len(graph.node)
    for idx in range(len(graph.node) - 1, -1, -1):
        reaches[idx] = any(graph.node[c].op_type == "Conv" or reaches[c]
                           for out in graph.node[idx].output for c in consumers.get(out, []))
    tail = []
    for idx, n in enumerate(graph.node):
        if not n.name:
            n.name = f"mdbatch_node_{idx}"  # the converter's block list is by node name
        if not reaches[idx]:  # includes the head convolutions themselves (no Conv after them)
            tail.append(n.name)
    return tail


def _tidy_casts(model: Any, blocked: set[str]) -> None:
    """Undo two habits of the converter around a node block list: it casts a blocked (fp32) node's
    graph output to fp16, and it round-trips fp32 tensors between blocked nodes through fp16.

    Both only lose precision, so graph outputs are taken straight from the fp32 producer and each
    fp32 -> fp16 -> fp32 Cast pair is bypassed.
    """
    from onnx import TensorProto

    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    outputs = {o.name for o in g.output}
    drop: list[Any] = []
    for n in g.node:
        if n.op_type != "Cast" or n.output[0] not in outputs:
            continue
        to = next((a.i for a in n.attribute if a.name == "to"), None)
        src = producer.get(n.input[0])
        if to == TensorProto.FLOAT16 and src is not None and src.name in blocked:
            for k, o in enumerate(src.output):
                if o == n.input[0]:
                    src.output[k] = n.output[0]
            drop.append(n)
    for n in drop:
        g.node.remove(n)
    producer = {o: n for n in g.node for o in n.output}
    for n in g.node:
        to = next((a.i for a in n.attribute if a.name == "to"), None)
        if n.op_type != "Cast" or to != TensorProto.FLOAT:
            continue
        first = producer.get(n.input[0])
        if (first is not None and first.op_type == "Cast" and first.name.endswith("output_cast0")
                and next((a.i for a in first.attribute if a.name == "to"), None) == TensorProto.FLOAT16):
            n.input[0] = first.input[0]  # fp32 -> fp16 -> fp32: read the fp32 tensor itself
    used = {i for n in g.node for i in n.input} | outputs
    for n in [n for n in g.node if n.op_type == "Cast" and not any(o in used for o in n.output)]:
        g.node.remove(n)
    for o in g.output:
        o.type.tensor_type.elem_type = TensorProto.FLOAT


def convert_to_fp16(model_path: Path, out_path: Path | None = None) -> Path:
    """Write the fp16 variant of ``model_path`` (default :func:`fp16_path`) and its manifest."""
    import sys

    model_path = Path(model_path)
    if not model_path.is_file():
        raise PrecisionError(f"model not found: {model_path}")
    out_path = Path(out_path) if out_path else fp16_path(model_path)
    if out_path.resolve() == model_path.resolve():
        raise PrecisionError(f"{model_path} already is an fp16 variant (name ends in {FP16_SUFFIX})")
    try:
        import onnx
        from onnxconverter_common import float16
    except ImportError as e:
        raise PrecisionError("fp16 conversion needs onnx and onnxconverter-common "
                             "(pip install -r requirements-torch.txt)") from e
    try:
        model = onnx.load(str(model_path))
    except Exception as e:
        raise PrecisionError(f"cannot read ONNX model {model_path}: {e}") from None
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        raise PrecisionError(f"{model_path} already holds fp16 weights")
    tail = _tail_nodes(model.graph)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))  # the converter recurses per node
    try:
        half = float16.convert_float_to_float16(
            model, keep_io_types=True, disable_shape_infer=False,
            node_block_list=tail, op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST))
    finally:
        sys.setrecursionlimit(limit)
    _tidy_casts(half, set(tail))
    onnx.checker.check_model(half)
    meta = {p.key: p.value for p in half.metadata_props}
    meta["precision"] = "fp16"
    onnx.helper.set_model_props(half, meta)
    onnx.save(half, str(out_path))
    src_manifest = manifest_path(model_path)
    if src_manifest is not None:
        raw = json.loads(src_manifest.read_text(encoding="utf-8"))
        raw["sha256"] = file_sha256(out_path)
        raw["precision"] = "fp16"
        raw["fp32_source_sha256"] = file_sha256(model_path)
        Path(str(out_path) + ".json").write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    return out_path


def model_for_precision(model_path: Path, precision: str) -> Path:
    """The file to load for ``precision``: the model itself (fp32), or its fp16 variant.

    The fp16 variant is used when present beside the model (``python -m scoring.export --fp16``
    wrote it) and converted there on first use otherwise (a node with a read-only model folder
    gets a clear error). A model that already is an fp16 variant is used as is.
    """
    model_path = Path(model_path)
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32" or model_path.name.endswith(FP16_SUFFIX):
        return model_path
    target = fp16_path(model_path)
    if target.is_file() and target.stat().st_mtime >= model_path.stat().st_mtime:
        return target
    try:
        return convert_to_fp16(model_path, target)
    except OSError as e:
        raise PrecisionError(f"cannot write the fp16 variant {target}: {e.strerror or e}") from None
