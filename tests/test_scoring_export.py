"""The PyTorch export is an optional extra: without torch it says how to get it; with it, it loads."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import pytest


def test_export_is_optional() -> None:
    sys.modules.pop("scoring.export", None)
    if importlib.util.find_spec("torch") is None:
        with pytest.raises(ImportError, match=r"requirements-torch\.txt"):
            importlib.import_module("scoring.export")
    else:  # the extra is installed: the exporter is usable
        mod = importlib.import_module("scoring.export")
        assert callable(mod.export) and callable(mod.main)
