"""The Azure Functions Python worker's own loader (azure-functions-runtime) indexes the app.

Azure runs these same two calls at start-up: `loader.index_function_app` and, per function,
`functions.Registry.add_indexed_function`; one refusal fails the whole app. The embedded host runs
them too, so what it starts is what the worker accepts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from embedded import EmbeddedHost
from embedded.appmodel import index_functions, indexed_by, load_app
from embedded.workerindex import WorkerRefusedApp, worker_version

REPO_ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter: the worker imports `function_app` by name and calls get_functions()
# once, which must not meet an app object that another test's host already indexed.
_INDEX_SCRIPT = textwrap.dedent(
    """
    import json, sys, types
    app_dir = sys.argv[1]
    sys.path.insert(0, app_dir)
    from azure_functions_runtime import functions, loader
    from azure_functions_runtime.bindings import meta
    meta.load_binding_registry()
    binding_info = types.SimpleNamespace(**{"in": 0, "out": 1, "inout": 2, "undefined": 0})
    protos = types.SimpleNamespace(BindingInfo=binding_info)
    indexed = loader.index_function_app(app_dir + "/function_app.py")
    registry = functions.Registry()
    accepted, refused = [], []
    for fn in indexed:
        try:
            info = registry.add_indexed_function(function=fn, protos=protos)
            accepted.append({"name": info.name, "bindings": [b.type for b in fn.get_bindings()]})
        except Exception as exc:
            refused.append(str(exc))
    print(json.dumps({"indexed": len(indexed), "accepted": accepted, "refused": refused}))
    """
)


def _worker_index(app_dir: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _INDEX_SCRIPT, str(app_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=app_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _write_app(folder: Path, annotation: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "function_app.py").write_text(
        textwrap.dedent(
            f"""
            from typing import Any

            import azure.durable_functions as df

            app = df.DFApp()


            @app.activity_trigger(input_name="arg")
            def shout(arg: {annotation}) -> {annotation}:
                return {{"said": str(arg).upper()}}
            """
        )
    )
    (folder / "host.json").write_text('{"version": "2.0"}')
    return folder


def test_the_worker_library_is_installed() -> None:
    """The dev requirements install it (--ignore-requires-python); without it the checks below are moot."""
    assert worker_version() not in (None, "unknown")


def test_every_function_of_the_app_is_accepted_by_the_worker() -> None:
    result = _worker_index(REPO_ROOT)
    assert result["refused"] == []
    names = {f["name"] for f in result["accepted"]}
    assert len(names) == result["indexed"] >= 20
    # every kind of door and step is among them: HTTP, blob, orchestrator, activity, entity-free
    kinds = {b for f in result["accepted"] for b in f["bindings"]}
    assert {"httpTrigger", "orchestrationTrigger", "activityTrigger", "durableClient"} <= kinds
    assert {"plan_shards", "submit_shard", "poll_shard", "report_request_status"} <= names


def test_the_worker_refuses_a_generic_alias_annotation(tmp_path: Path) -> None:
    """The defect the issue found, shown on the real loader itself (so the host's refusal below is real)."""
    result = _worker_index(_write_app(tmp_path / "bad", "dict[str, Any]"))
    assert result["accepted"] == []
    assert result["refused"] == [
        "cannot load the shout function: binding arg has invalid non-type annotation dict[str, typing.Any]"
    ]


def test_the_embedded_host_refuses_what_the_worker_refuses(tmp_path: Path) -> None:
    app_dir = _write_app(tmp_path / "bad", "dict[str, Any]")
    host = EmbeddedHost(app_dir, tmp_path / "state")
    with pytest.raises(WorkerRefusedApp) as caught:
        host.start()
    worker_says = (
        "cannot load the shout function: binding arg has invalid non-type annotation dict[str, typing.Any]"
    )
    assert worker_says in str(caught.value)
    assert host.engine is None  # refused before anything started


def test_the_embedded_host_indexes_through_the_worker(tmp_path: Path) -> None:
    app = load_app(_write_app(tmp_path / "good", "dict"))
    functions = index_functions(app)
    assert list(functions) == ["shout"]
    assert indexed_by(app) == f"azure-functions-runtime {worker_version()}"
    # a second index of the same app object (a host restarted in one process) reuses the first
    assert list(index_functions(app)) == ["shout"]


def test_the_service_app_is_indexed_by_the_worker_in_the_embedded_host() -> None:
    """What every service test starts: this repository's app, through the worker's loader."""
    app = load_app(REPO_ROOT)
    functions = index_functions(app)
    assert indexed_by(app) == f"azure-functions-runtime {worker_version()}"
    assert {"plan_shards", "submit_shard", "detection_batch"} <= set(functions)
