"""`python -m scoring ARGS`, unchanged, except that every image it scores is appended to the file
named by $RELIABILITY_SCORE_TRACE (one line per inference result, O_APPEND): the pre-emption test
counts from it how often each image was scored across killed and resumed runs."""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.getcwd())  # the local backend runs us in MDBATCH_CODE_DIR (the repository)

import scoring.engine as engine
from scoring.__main__ import main

_entry = engine._entry
_trace = os.environ["RELIABILITY_SCORE_TRACE"]


def _counted(item: Any, detections: Any, failure: Any) -> Any:
    if detections is not None:  # an inference result (a failure entry is no scoring work)
        fd = os.open(_trace, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (item.file + "\n").encode())
        finally:
            os.close(fd)
    return _entry(item, detections, failure)


engine._entry = _counted

if __name__ == "__main__":
    sys.exit(main())
