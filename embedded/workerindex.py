"""Index a Function app with the Azure Functions Python worker's own loader, when it is installed.

Azure indexes a v2-model app in its Python worker: `loader.index_function_app` imports
`function_app.py` and collects the functions, then `functions.Registry.add_indexed_function` checks
each one's bindings against its Python signature and annotations. One refusal fails the whole
metadata response and the host runs nothing. The worker library is on PyPI as
`azure-functions-runtime` (Requires-Python >= 3.13, but it imports and runs on 3.11 when installed
with `--ignore-requires-python`). When it is importable the embedded host indexes through it, so
every test that starts the host also runs Azure's checks; when it is not (an end user's machine
without the dev requirements) the host falls back to `app.get_functions()` and says so.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import sys
import threading
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

log = logging.getLogger("embedded")

WORKER_DISTRIBUTION = "azure-functions-runtime"

# The values of AzureFunctionsRpcMessages.BindingInfo's Direction (in/out/inout) and DataType
# (undefined/string/binary/stream) enums in the host-worker protocol (FunctionRpc.proto). The
# worker receives the generated protobuf module from its gRPC side; its loader reads only these
# enum values from it, so plain ints are exactly what it compares against.
_BINDING_INFO = SimpleNamespace(
    **{"in": 0, "out": 1, "inout": 2, "undefined": 0, "string": 1, "binary": 2, "stream": 3}
)
_PROTOS = SimpleNamespace(BindingInfo=_BINDING_INFO)

_lock = threading.Lock()


class WorkerRefusedApp(RuntimeError):
    """The Functions worker would refuse this app; the message is the worker's own."""


def worker_version() -> str | None:
    """Version of the installed worker library, or None when it is not installed."""
    try:
        importlib.import_module("azure_functions_runtime.loader")
        return importlib.metadata.version(WORKER_DISTRIBUTION)
    except ImportError:
        return None
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def index_with_worker(module: ModuleType, script: Path) -> list[Any]:
    """The app's functions as the worker indexes them; raises WorkerRefusedApp on any refusal.

    `module` is the already imported `function_app` module (the embedded host may have imported it
    under another name, for a second app in one process); for the worker's `import_module` call
    it is put under the script's own name for the duration of the call.
    """
    from azure_functions_runtime import functions, loader
    from azure_functions_runtime.bindings import meta

    name = script.stem
    with _lock:
        meta.load_binding_registry()  # what the worker does at init, before indexing
        previous = sys.modules.get(name)
        sys.modules[name] = module
        try:
            try:
                indexed = loader.index_function_app(str(script))
            except Exception as exc:  # the worker's own message, e.g. "More than one ... instances"
                raise WorkerRefusedApp(f"the Functions worker cannot index {script}: {exc}") from exc
            registry = functions.Registry()
            for fn in indexed:
                try:
                    info = registry.add_indexed_function(function=fn, protos=_PROTOS)
                    loader.get_fx_raw_bindings(indexed_function=fn, function_info=info)
                except Exception as exc:
                    raise WorkerRefusedApp(f"the Functions worker refuses {script}: {exc}") from exc
        finally:
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
    return list(indexed)
