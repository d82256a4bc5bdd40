"""Raw detector output -> MegaDetector detections, numerically like MegaDetector "classic".

Mirrors ``megadetector.detection.pytorch_detector`` (classic mode): objectness
prefilter, score = objectness x best class score, per-class greedy NMS at IoU
0.45 (torchvision semantics: suppress IoU > threshold), at most 300 boxes, boxes
scaled back with YOLOv5's ``scale_boxes`` (or ultralytics' for ``ultralytics``
models, as MegaDetector does: whole-pixel pads, gain per axis), clipped and
rounded to whole pixels, then normalized ``[x_min, y_min, w, h]`` computed in
float32 and truncated to 4 decimals; conf truncated to 3 decimals. Detections
are listed the way MegaDetector lists them: NMS output walked lowest conf first,
then stable-sorted by the truncated conf, highest first.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

NMS_IOU = 0.45
MAX_DET = 300
CONF_DIGITS = 3
COORD_DIGITS = 4


def _truncate(x: float, digits: int) -> float:
    f = 10 ** digits
    return math.floor(x * f) / f


def nms_indices(boxes: np.ndarray, scores: np.ndarray, iou_thres: float) -> np.ndarray:
    """Greedy NMS over xyxy boxes, highest score first (same rule as torchvision.ops.nms)."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    areas = (x2 - x1) * (y2 - y1)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        rest = order[1:]
        xx1 = np.maximum(x1[i], x1[rest])
        yy1 = np.maximum(y1[i], y1[rest])
        xx2 = np.minimum(x2[i], x2[rest])
        yy2 = np.minimum(y2[i], y2[rest])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[~(iou > iou_thres)]
    return np.asarray(keep, dtype=np.int64)


def select(pred: np.ndarray, layout: str, conf_thres: float, iou_thres: float = NMS_IOU,
           max_det: int = MAX_DET) -> np.ndarray:
    """One image's raw output -> [K, 6] float32 (x1, y1, x2, y2, conf, class) in input pixels.

    ``pred`` is [N, 5+nc] for ``yolov5`` or [4+nc, N] for ``ultralytics`` and ``yolov9``.
    """
    if layout in ("ultralytics", "yolov9"):
        x = pred.T
        cls_scores = x[:, 4:]
        best = cls_scores.max(axis=1)
        x = x[best > conf_thres]
        class_conf = x[:, 4:]
    else:
        x = pred[pred[:, 4] > conf_thres]
        class_conf = x[:, 5:] * x[:, 4:5]
    if x.shape[0] == 0:
        return np.zeros((0, 6), np.float32)
    cx, cy, w, h = x[:, 0], x[:, 1], x[:, 2], x[:, 3]
    box = np.stack([cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0], axis=1).astype(np.float32)
    cls_idx = class_conf.argmax(axis=1)
    conf = class_conf[np.arange(len(cls_idx)), cls_idx].astype(np.float32)
    ok = conf > conf_thres
    box, conf, cls_idx = box[ok], conf[ok], cls_idx[ok]
    parts = []
    for c in np.unique(cls_idx):
        m = cls_idx == c
        keep = nms_indices(box[m], conf[m], iou_thres)
        b, s = box[m][keep], conf[m][keep]
        parts.append(np.concatenate([b, s[:, None], np.full((len(keep), 1), c, np.float32)], axis=1))
    if not parts:
        return np.zeros((0, 6), np.float32)
    det = np.concatenate(parts, axis=0)
    det = det[np.argsort(-det[:, 4], kind="stable")][:max_det]
    return det.astype(np.float32, copy=False)


def scale_boxes(input_hw: tuple[int, int], boxes: np.ndarray, orig_hw: tuple[int, int],
                layout: str = "yolov5") -> np.ndarray:
    """``scale_boxes`` (ratio_pad=None) + clip, then round to whole pixels. float32 in/out.

    ``yolov5``: YOLOv5's (fractional pad, one gain). ``ultralytics``: the ultralytics package's,
    which MegaDetector uses for those models (pads rounded like LetterBox, gain per axis from
    the rounded resized size).
    """
    gain = min(input_hw[0] / orig_hw[0], input_hw[1] / orig_hw[1])
    b = boxes.astype(np.float32, copy=True)
    if layout == "ultralytics":
        new_h, new_w = (max(round(x * gain), 1) for x in orig_hw)
        gain_y, gain_x = new_h / orig_hw[0], new_w / orig_hw[1]
        pad_x = round((input_hw[1] - new_w) / 2 - 0.1)
        pad_y = round((input_hw[0] - new_h) / 2 - 0.1)
        b[:, [0, 2]] -= np.float32(pad_x)
        b[:, [1, 3]] -= np.float32(pad_y)
        b[:, [0, 2]] /= np.float32(gain_x)
        b[:, [1, 3]] /= np.float32(gain_y)
    else:
        pad_x = (input_hw[1] - orig_hw[1] * gain) / 2
        pad_y = (input_hw[0] - orig_hw[0] * gain) / 2
        b[:, [0, 2]] -= np.float32(pad_x)
        b[:, [1, 3]] -= np.float32(pad_y)
        b /= np.float32(gain)
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, orig_hw[1])
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, orig_hw[0])
    return np.round(b)


def to_detections(det: np.ndarray, input_hw: tuple[int, int], orig_hw: tuple[int, int],
                  conf_thres: float, category_ids: list[str], layout: str = "yolov5"
                  ) -> list[dict[str, Any]]:
    """[K, 6] input-pixel detections -> MegaDetector ``detections`` entries, highest conf first."""
    if det.shape[0] == 0:
        return []
    xyxy = scale_boxes(input_hw, det[:, :4], orig_hw, layout)
    gn_w, gn_h = np.float32(orig_hw[1]), np.float32(orig_hw[0])
    # xyxy2xywh then / gn, in float32 like torch; the final subtraction in float64 like Python
    xc = ((xyxy[:, 0] + xyxy[:, 2]) / np.float32(2)) / gn_w
    yc = ((xyxy[:, 1] + xyxy[:, 3]) / np.float32(2)) / gn_h
    bw = (xyxy[:, 2] - xyxy[:, 0]) / gn_w
    bh = (xyxy[:, 3] - xyxy[:, 1]) / gn_h
    out = []
    for i in reversed(range(det.shape[0])):  # MegaDetector: ``for ... in reversed(det)``
        conf = float(det[i, 4])
        if conf < conf_thres:
            continue
        w, h = float(bw[i]), float(bh[i])
        box = [float(xc[i]) - w / 2.0, float(yc[i]) - h / 2.0, w, h]
        box = [min(1.0, max(0.0, _truncate(v, COORD_DIGITS))) for v in box]
        cls = int(det[i, 5])
        out.append({
            "category": category_ids[cls] if cls < len(category_ids) else str(cls + 1),
            "conf": _truncate(conf, CONF_DIGITS),
            "bbox": box,
        })
    out.sort(key=lambda d: d["conf"], reverse=True)  # stable, like run_detector_batch's sort
    return out
