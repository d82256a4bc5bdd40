"""Loading a Python v2 Function app: settings, host.json, the function index, route templates."""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from .workerindex import WorkerRefusedApp, index_with_worker, worker_version

log = logging.getLogger("embedded")

_INDEX_CACHE: dict[int, tuple[Any, list, str]] = {}
_APP_SOURCES: dict[int, tuple[Any, ModuleType, Path]] = {}
_REFUSED: dict[int, tuple[Any, Exception]] = {}


@dataclass
class FunctionInfo:
    """One indexed function: its trigger, bindings and the callable the worker would call."""

    name: str
    trigger_type: str
    trigger: dict
    bindings: list[dict]
    func: Any
    is_async: bool
    params: list[str]

    @property
    def client_params(self) -> list[str]:
        return [b["name"] for b in self.bindings if b.get("type") == "durableClient"]


@dataclass
class HttpRoute:
    """A compiled HTTP route template (ASP.NET-style: {name}, {name:int}, {name?}, {*rest})."""

    function: FunctionInfo
    template: str
    regex: re.Pattern
    methods: set[str] | None
    auth_level: str
    literal_segments: int
    param_names: list[str] = field(default_factory=list)


def _plain(v: Any) -> Any:
    """Binding dicts hold enums; turn them into their values."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return getattr(v, "value", v)


def load_settings(app_dir: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """local.settings.json "Values" as Core Tools applies them: the environment wins.

    Returns the variables this call set, so a host can undo them when it stops.
    """
    applied: dict[str, str] = {}
    path = app_dir / "local.settings.json"
    values: dict[str, Any] = {}
    if path.is_file():
        try:
            values = json.loads(path.read_text(encoding="utf-8-sig")).get("Values", {}) or {}
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read {path}: {e}") from e
    for k, v in (env or {}).items():
        if os.environ.get(k) != str(v):
            applied[k] = os.environ.get(k)  # type: ignore[assignment]
            os.environ[k] = str(v)
    for k, v in values.items():
        if k not in os.environ:
            applied[k] = None  # type: ignore[assignment]
            os.environ[k] = str(v)
    return applied


def undo_settings(applied: dict[str, str | None]) -> None:
    for k, old in applied.items():
        if old is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = old


def load_host_json(app_dir: Path) -> dict:
    path = app_dir / "host.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8-sig"))


def route_prefix(host_json: dict) -> str:
    prefix = host_json.get("extensions", {}).get("http", {}).get("routePrefix", "api")
    return (prefix or "").strip("/")


def hub_name(host_json: dict) -> str:
    name = host_json.get("extensions", {}).get("durableTask", {}).get("hubName") or "EmbeddedHub"
    if name.startswith("%") and name.endswith("%"):
        name = os.environ.get(name.strip("%"), "EmbeddedHub")
    return name


def load_app(app_dir: Path) -> Any:
    """Import DIR/function_app.py (DIR first on sys.path so the app's own packages import)."""
    app_dir = app_dir.resolve()
    path = app_dir / "function_app.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    if str(app_dir) not in sys.path:
        sys.path.insert(0, str(app_dir))
    existing = sys.modules.get("function_app")
    if existing is not None and Path(getattr(existing, "__file__", "") or "").resolve() == path:
        module = existing
    else:
        modname = "function_app" if existing is None else f"_embedded_app_{abs(hash(str(path)))}"
        spec = importlib.util.spec_from_file_location(modname, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[modname] = module
        spec.loader.exec_module(module)
    app = getattr(module, "app", None)
    if app is None:
        raise ValueError(f"{path} has no module-level 'app'")
    _APP_SOURCES[id(app)] = (app, module, path)
    return app


def index_functions(app: Any) -> dict[str, FunctionInfo]:
    """The app's functions, indexed once per app object (a second get_functions() raises in the library).

    An app loaded with `load_app` is indexed by the Functions worker's own loader when it is
    installed (`embedded.workerindex`): whatever the worker would refuse is refused here, with the
    worker's message, before the host serves anything.
    """
    cached = _INDEX_CACHE.get(id(app))
    if cached is None or cached[0] is not app:
        source = _APP_SOURCES.get(id(app))
        version = worker_version() if source is not None and source[0] is app else None
        if version is not None:
            assert source is not None
            refused = _REFUSED.get(id(app))
            if refused is not None and refused[0] is app:
                raise refused[1]  # get_functions() ran once already; the same refusal again
            try:
                indexed = index_with_worker(source[1], source[2])
            except WorkerRefusedApp as exc:
                _REFUSED[id(app)] = (app, exc)
                raise
            cached = (app, indexed, f"azure-functions-runtime {version}")
        else:
            if source is not None:
                log.info("azure-functions-runtime not installed: indexed without the worker's checks")
            cached = (app, app.get_functions(), "azure-functions get_functions")
        _INDEX_CACHE[id(app)] = cached
    out: dict[str, FunctionInfo] = {}
    for f in cached[1]:
        trig = f.get_trigger()
        user = f.get_user_function()
        try:
            params = list(inspect.signature(user).parameters)
        except (TypeError, ValueError):
            params = []
        out[f.get_function_name()] = FunctionInfo(
            name=f.get_function_name(),
            trigger_type=trig.type,
            trigger=_plain(trig.get_dict_repr()),
            bindings=[_plain(b.get_dict_repr()) for b in f.get_bindings()],
            func=user,
            is_async=inspect.iscoroutinefunction(user),
            params=params,
        )
    return out


def indexed_by(app: Any) -> str | None:
    """What indexed this app: "azure-functions-runtime VERSION" (the worker's loader) or the plain SDK."""
    cached = _INDEX_CACHE.get(id(app))
    return cached[2] if cached is not None and cached[0] is app else None


_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "bool": r"(?i:true|false)",
    "alpha": r"[A-Za-z]+",
    "guid": r"[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}",
    "float": r"-?\d+(?:\.\d+)?",
    "double": r"-?\d+(?:\.\d+)?",
    "decimal": r"-?\d+(?:\.\d+)?",
}


def compile_route(prefix: str, template: str) -> tuple[re.Pattern, list[str], int]:
    """Turn a route template into a regex over the URL path (without leading slash)."""
    parts = [p for p in (prefix.split("/") if prefix else []) + template.strip("/").split("/") if p != ""]
    regex = ""
    names: list[str] = []
    literal = 0
    for i, seg in enumerate(parts):
        sep = "/" if i else ""
        m = re.fullmatch(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)((?::[^}=?]+)*)(\?)?(?:=([^}]*))?\}", seg)
        if not m:
            if "{" in seg:  # mixed literal+param segment, e.g. file.{ext}
                seg_re = ""
                for tok in re.split(r"(\{[^}]+\})", seg):
                    pm = re.fullmatch(r"\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}", tok)
                    if pm:
                        names.append(pm.group(1))
                        seg_re += f"(?P<{pm.group(1)}>[^/]+?)"
                    else:
                        seg_re += re.escape(tok)
                regex += sep + seg_re
            else:
                literal += 1
                regex += sep + re.escape(seg)
            continue
        star, name, constraints, optional, default = m.groups()
        names.append(name)
        pat = r"[^/]+"
        for c in (constraints or "").split(":")[1:]:
            base = c.split("(")[0].lower()
            if base in _CONSTRAINTS:
                pat = _CONSTRAINTS[base]
            elif base == "regex":
                pat = c[c.index("(") + 1 : -1]
        if star:
            regex += f"(?:{sep}(?P<{name}>.*))?"
        elif optional or default is not None:
            regex += f"(?:{sep}(?P<{name}>{pat}))?"
        else:
            regex += f"{sep}(?P<{name}>{pat})"
    return re.compile("^" + regex + "/?$", re.IGNORECASE), names, literal


def build_routes(functions: dict[str, FunctionInfo], prefix: str, default_auth: str) -> list[HttpRoute]:
    routes: list[HttpRoute] = []
    for f in functions.values():
        if f.trigger_type != "httpTrigger":
            continue
        template = f.trigger.get("route") or f.name
        regex, names, literal = compile_route(prefix, template)
        methods = f.trigger.get("methods")
        routes.append(
            HttpRoute(
                function=f,
                template=template,
                regex=regex,
                methods={m.upper() for m in methods} if methods else None,
                auth_level=str(f.trigger.get("authLevel") or default_auth).lower(),
                literal_segments=literal,
                param_names=names,
            )
        )
    # most specific first: more literal segments, then fewer parameters
    routes.sort(key=lambda r: (-r.literal_segments, len(r.param_names), r.template))
    return routes
