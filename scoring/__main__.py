"""``python -m scoring --model MODEL --input INPUT --output OUTPUT [...]`` (see docs/contracts.md)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .classifier import ClassifierError
from .engine import Interrupted, ModelError, RunConfig, run
from .inputs import InputError
from .precision import PRECISIONS
from .providers import PROVIDER_NAMES
from .storage import StorageError

EXIT_ERROR = 2
EXIT_INTERRUPTED = 143


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scoring",
                                description="Run a MegaDetector-family ONNX detector on a shard of images.")
    p.add_argument("--model", required=True, help="ONNX model file (manifest MODEL.json beside it)")
    p.add_argument("--input", required=True,
                   help="folder, JSON/text image list, or shard manifest (path, file:// or blob URL)")
    p.add_argument("--output", required=True, help="results file (path, file:// or blob URL)")
    p.add_argument("--threshold", type=float, default=0.005, help="output confidence threshold")
    p.add_argument("--batch-size", type=int, default=None, help="images per inference (default 1 CPU, 8 GPU)")
    p.add_argument("--checkpoint-every", type=int, default=500, help="checkpoint every N images (0: off)")
    p.add_argument("--progress-every", type=float, default=2.0,
                   help="write OUTPUT.progress.json at most every S seconds (0: no progress file)")
    p.add_argument("--workers", type=int, default=None, help="fetch/decode threads")
    p.add_argument("--threads", type=int, default=None,
                   help="ONNX Runtime threads in all (default: every core), split over --streams")
    p.add_argument("--streams", type=int, default=None,
                   help="CPU inference sessions scoring at once, each with its share of --threads "
                        "(default: one per four threads, 2-4; always 1 on a GPU)")
    p.add_argument("--classifier", default=None,
                   help="optional crop classifier (ONNX + its mdbatch-classifier manifest) run on "
                        "animal detections after detection")
    p.add_argument("--country", default=None, help="ISO 3166-1 alpha-3 code of where the images were "
                   "taken (with --classifier: recorded; the geofence uses it)")
    p.add_argument("--admin1-region", default=None, help="first-level region within --country (e.g. CA)")
    p.add_argument("--ensemble", action="store_true",
                   help="SpeciesNet's ensemble on the classifications (geofence by --country, roll-up); "
                        "needs a classifier with ensemble files and the speciesnet package")
    p.add_argument("--cpu", action="store_true", help="use the CPU provider even when CUDA is present")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (the parity reference) or fp16 (the model's .fp16.onnx variant, "
                        "converted beside it on first use)")
    p.add_argument("--provider", choices=PROVIDER_NAMES, default=None,
                   help="execution provider with tuned settings: auto (CUDA if present), cpu, cuda, "
                        "tensorrt, openvino (OpenVINO runtime on the CPU); default: CUDA if present, else "
                        "the CPU, with ONNX Runtime's own settings")
    p.add_argument("-q", "--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for flag, value in (("--batch-size", args.batch_size), ("--streams", args.streams),
                        ("--threads", args.threads)):
        if value is not None and value < 1:
            print(f"error: {flag} must be >= 1", file=sys.stderr)
            return EXIT_ERROR
    cfg = RunConfig(model=Path(args.model), input=args.input, output=args.output,
                    threshold=args.threshold, batch_size=args.batch_size,
                    checkpoint_every=args.checkpoint_every,
                    progress_every=args.progress_every, workers=args.workers, threads=args.threads,
                    streams=args.streams,
                    providers=["CPUExecutionProvider"] if args.cpu else None,
                    classifier=Path(args.classifier) if args.classifier else None,
                    classifier_options={"country": args.country, "admin1_region": args.admin1_region,
                                        "ensemble": args.ensemble},
                    precision=args.precision, provider=None if args.cpu else args.provider)
    try:
        stats = run(cfg)
    except Interrupted as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ModelError, ClassifierError, InputError, StorageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    if not args.quiet:
        print(f"scored {stats.scored}, failed {stats.failed}, resumed {stats.resumed} of {stats.total} "
              f"images in {stats.seconds:.1f}s ({stats.images_per_s:.2f} images/s, "
              f"batch {stats.extra.get('batch_size')}, {stats.extra.get('providers', ['?'])[0]})",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
