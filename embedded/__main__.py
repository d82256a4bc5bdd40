"""python -m embedded --app-dir DIR [--port 7071] [--state STATE_DIR] [--workers N] [--log-level LEVEL]"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from .host import EmbeddedHost


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m embedded", description="Run a Python v2 Function app offline."
    )
    p.add_argument("--app-dir", required=True, type=Path, help="folder holding function_app.py")
    p.add_argument("--port", type=int, default=7071)
    p.add_argument("--state", type=Path, default=None, help="state folder (default APP_DIR/.embedded-state)")
    p.add_argument("--workers", type=int, default=None, help="activity workers (default: CPU cores)")
    p.add_argument("--log-level", default="INFO")
    p.add_argument(
        "--require-keys",
        action="store_true",
        help="enforce function keys (created in STATE/keys.json if missing)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    state = args.state or (args.app_dir / ".embedded-state")
    host = EmbeddedHost(
        args.app_dir,
        state,
        port=args.port,
        workers=args.workers,
        require_keys=True if args.require_keys else None,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    host.start()
    print(f"embedded host listening on {host.base_url}", file=sys.stderr, flush=True)
    if host.keys:
        print(f"function keys are enforced; keys are in {state / 'keys.json'}", file=sys.stderr, flush=True)
    stop.wait()
    host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
