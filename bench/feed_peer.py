"""Runs in bench/.peer-venv: MegaDetector's own image-queue feed with inference replaced by nothing.

``python feed_peer.py MODEL.pt IMAGES.json MODE LOADERS`` prints one JSON line
{"images", "seconds", "mode", "loaders", "steady_images_per_s"}.

MODE ``queue``: MegaDetector's default queue (``use_image_queue=True``): LOADERS processes run its
``_producer_func`` (``vis_utils.load_image``: PIL decode, EXIF rotation, RGB), the consuming
process letterboxes with the detector's ``preprocess_image`` and builds the batch tensor the way
``generate_detections_one_batch`` does (HWC->CHW, ``torch.from_numpy``, stack, float, /255).
Env MD_TORCH_THREADS=N limits the consumer's torch threads (default: torch's own).
MODE ``queue-preprocess``: its ``preprocess_on_image_queue=True`` variant (letterbox in the
loaders); the consumer only builds the tensor. The model itself is never run.
"""

import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import megadetector.detection.run_detector_batch as rdb
import numpy as np
import torch

OPTIONS = {"model_type": "yolov5"}


def main() -> None:
    model, image_list, mode, loaders = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    images = json.loads(Path(image_list).read_text())
    if os.environ.get("MD_TORCH_THREADS"):  # its best case on a small machine: no thread contention
        torch.set_num_threads(int(os.environ["MD_TORCH_THREADS"]))
    t0 = time.monotonic()
    q = multiprocessing.JoinableQueue(rdb.max_queue_size)
    pre_on_queue = mode == "queue-preprocess"
    chunks = rdb.split_list_into_n_chunks(images, loaders, chunk_strategy="greedy")
    preprocessor = model if pre_on_queue else None
    procs = [multiprocessing.Process(target=rdb._producer_func,
                                     args=(q, chunk, i, preprocessor, OPTIONS, False, None, None))
             for i, chunk in enumerate(chunks)]
    for p in procs:
        p.start()
    pre = None if pre_on_queue else rdb._load_preprocessor(model, detector_options=OPTIONS)
    done, n, t_first = 0, 0, None
    while done < len(procs):
        item = q.get()
        if t_first is None:
            t_first = time.monotonic()
        q.task_done()
        if item is None:
            done += 1
            continue
        im_file, image, _ = item
        info = image if pre_on_queue else pre.preprocess_image(image, image_id=im_file)
        img = info["img_processed"]
        t = torch.from_numpy(np.ascontiguousarray(img.transpose((2, 0, 1))))
        batch = torch.stack([t]).float()
        batch /= 255.0
        n += 1
    for p in procs:
        p.join()
    t_end = time.monotonic()
    # steady: from the first image out of the queue to the last, i.e. without starting the loader
    # processes and loading the preprocessor (n-1 images in that span)
    print(json.dumps({"images": n, "seconds": t_end - t0, "mode": mode, "loaders": loaders,
                      "steady_images_per_s": (n - 1) / max(t_end - (t_first or t0), 1e-9)}))


if __name__ == "__main__":
    main()
