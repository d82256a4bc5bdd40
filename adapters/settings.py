"""All MDBATCH_* settings, read in one place.

Every part of the app asks `Settings.from_env()` instead of reading `os.environ`
itself, so defaults and error messages live here. To add a setting: add a field
with a default and one line in `from_env` (see `_FIELDS`).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """CWD/.mdbatch where the working folder is writable; else a temp folder.

    In Azure the working folder is the app folder, read-only when the app runs from a package
    (the Flex Consumption default), and wiped by every deployment anyway: there (WEBSITE_INSTANCE_ID
    is set) or wherever the working folder cannot be written, state goes under the temp folder.
    """
    env = os.environ if env is None else env
    cwd = Path.cwd()
    if not env.get("WEBSITE_INSTANCE_ID") and os.access(cwd, os.W_OK):
        return cwd / ".mdbatch"
    return Path(tempfile.gettempdir()) / "mdbatch-state"


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names the variable."""


def _bool(name: str, raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean (use true/false)")


def _int(name: str, raw: str, minimum: int | None = None) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name}={value} must be at least {minimum}")
    return value


def _float(name: str, raw: str, minimum: float | None = None) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name}={value} must be at least {minimum}")
    return value


def _list(raw: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def _paths(name: str, raw: str) -> tuple[str, ...]:
    """Absolute folders separated by os.pathsep (':' on Linux and macOS, ';' on Windows)."""
    out = []
    for part in raw.split(os.pathsep):
        part = part.strip()
        if not part:
            continue
        path = Path(part).expanduser()
        if not path.is_absolute():
            raise SettingsError(f"{name}: {part!r} is not an absolute path")
        out.append(str(path))
    return tuple(out)


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise SettingsError(f"{name}={raw!r} must be one of {', '.join(choices)}")
    return value


@dataclass(frozen=True)
class Settings:
    """Service settings. Field `x_y` is read from `MDBATCH_X_Y` (see `_FIELDS` for exceptions).

    To add a setting, add a field with a default: its type annotation picks the parser
    (str, int, float, bool, Path, tuple[str, ...], each optionally `| None`); `metadata` may
    carry `min` (numbers) or `choices` (strings).
    """

    # --- general -------------------------------------------------------------
    state_dir: Path = field(default_factory=default_state_dir)
    # scratch space for files handed to Azure (the AML code snapshot); default a temp folder,
    # never the app folder (read-only when run from a package) nor the state folder
    staging_dir: Path | None = None
    # --- storage -------------------------------------------------------------
    allowed_hosts: tuple[str, ...] = ("*.blob.core.windows.net",)
    allow_local_storage: bool = False
    allow_azurite: bool = False
    work_url: str | None = None  # where manifests and results go; default file://STATE_DIR/work
    storage_connection_string: str | None = None  # AZURE_STORAGE_CONNECTION_STRING (Azurite/dev only)
    read_workers: int = field(default=16, metadata={"min": 1})
    download_link_hours: float = field(default=168.0, metadata={"min": 0})
    # --- secrets -------------------------------------------------------------
    # keyvault is the default when a vault URL is set
    secrets_backend: str = field(default="local", metadata={"choices": ("local", "keyvault")})
    key_vault_url: str | None = None
    secrets_file: Path | None = None  # default STATE_DIR/secrets.json
    secret_cache_ttl_s: float = field(default=30.0, metadata={"min": 0})
    # --- compute -------------------------------------------------------------
    compute_backend: str = field(default="local", metadata={"choices": ("local", "azureml")})
    local_workers: int = field(default=1, metadata={"min": 1})
    code_dir: Path = REPO_ROOT  # cwd of `python -m scoring` on the local backend
    python: str = sys.executable
    model_dir: Path | None = None  # default STATE_DIR/models
    default_model: str = "MDV5A"
    aml_subscription_id: str | None = None
    aml_resource_group: str | None = None
    aml_workspace: str | None = None
    aml_compute: str | None = None
    aml_environment: str = "mdbatch-onnx-gpu@latest"
    aml_experiment: str = "mdbatch"
    # the scoring package folder (snapshotted as a code asset) or a code asset id; default REPO_ROOT/scoring
    aml_code: str | None = None
    aml_model_label: str = "latest"
    aml_datastore: str | None = None  # datastore name whose container holds manifests and results
    aml_datastore_url: str | None = None  # https://ACCOUNT.blob.core.windows.net/CONTAINER of that datastore
    aml_identity_client_id: str | None = None  # client id of the cluster's user-assigned identity
    # the cluster has GPUs: the job tells the scorer (MDBATCH_REQUIRE_CUDA=1) to fail rather than
    # score on the CPU when the CUDA provider does not load
    aml_require_gpu: bool = True
    # --- the detection service (issue 5: triggers, orchestration, activities) ---
    output_url: str | None = None  # where results are published; default the work location
    output_link_days: float = 90.0  # expiry of the published read-only links
    max_images: int = 4_000_000  # per request, after filtering
    max_body_bytes: int = 1_048_576  # request JSON size limit
    max_list_bytes: int = 512 * 1024 * 1024  # image-list JSON size limit
    shard_size: int = 50_000  # issue 13: docs/cost.md (GPU node start per shard vs. parallelism)
    max_in_flight: int = 16  # shards in flight per request (the GPU cluster's node count)
    group_size: int = 50  # shards per sub-orchestration, at most
    poll_initial_s: float = 15.0  # first wait before polling a job; doubles up to poll_max_s
    poll_max_s: float = 120.0
    poll_factor: float = 2.0
    max_attempts: int = 3  # shard attempts that make no progress (resubmits resume from the checkpoint)
    attempt_timeout_s: float = 12 * 3600.0
    # issue 14b: an attempt that advanced the shard's checkpoint is not counted in max_attempts;
    # these cap every attempt and the shard's whole time instead
    max_total_attempts: int = 20
    shard_timeout_s: float = 48 * 3600.0
    # issue 14b: a running job whose status has not moved for this long says so, with the reason
    stall_seconds: float = field(default=600.0, metadata={"min": 1})
    checkpoint_every: int = 500
    max_active_jobs: int = 100  # more running requests than this -> 503
    callers: tuple[str, ...] = ()  # allowlist for the `caller` field; empty = anyone when no auth headers
    # App Service authentication ("Easy Auth") is on: only then are its x-ms-client-principal-*
    # headers the caller (the platform strips forged ones); without it anyone could send them.
    app_service_auth: bool = False
    # issue 11: the v4 routes are anonymous at the host and check a sent function key themselves,
    # against the string values of this JSON file (default STATE_DIR/keys.json, the embedded host's
    # key file) and the secret `mdb-function-key` in the secret store (Key Vault in Azure)
    function_keys_file: Path | None = None
    requests_container: str = "detection-requests"  # blob-upload door
    requests_connection: str = "AzureWebJobsStorage"  # app setting naming the blob-trigger connection
    models: tuple[str, ...] = ()  # supported model versions; empty = every NAME.onnx in model_dir
    # issue 12: supported crop classifiers; empty = every NAME.onnx in model_dir/classifiers (local)
    classifiers: tuple[str, ...] = ()
    # live progress: how often a running request reads its shards' progress files (the interval
    # grows on long jobs to keep the history small); 0 = only when a shard group finishes
    progress_interval_s: float = field(default=30.0, metadata={"min": 0})
    task_hub: str = "mdbatch"  # the Durable task hub; host.json reads it as %MDBATCH_TASK_HUB%
    # plan, aggregate, publish and cleanup are retried: one storage hiccup must not waste the GPU work
    activity_attempts: int = field(default=3, metadata={"min": 1})
    activity_retry_s: float = field(default=5.0, metadata={"min": 0.001})
    # --- isolation (issue 14): local sources confined, scoped status links ------------------------
    # local folders callers may name (embedded mode), os.pathsep-separated absolute paths; empty = none
    local_roots: tuple[str, ...] = ()
    # folders a local source never reads besides the state, model and work folders (mdbatch: its home)
    private_dirs: tuple[str, ...] = ()
    status_link_days: float = field(default=30.0, metadata={"min": 0.001})  # expiry of status URLs

    @property
    def secrets_path(self) -> Path:
        return self.secrets_file or (self.state_dir / "secrets.json")

    @property
    def staging_path(self) -> Path:
        return self.staging_dir or (Path(tempfile.gettempdir()) / "mdbatch-staging")

    @property
    def function_keys_path(self) -> Path:
        return self.function_keys_file or (self.state_dir / "keys.json")

    @property
    def models_path(self) -> Path:
        return self.model_dir or (self.state_dir / "models")

    @property
    def work_location(self) -> str:
        return self.work_url or (self.state_dir / "work").resolve().as_uri()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from `env` (default: os.environ); raise SettingsError naming a bad variable."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            var = _FIELDS.get(f.name, "MDBATCH_" + f.name.upper())
            raw = env.get(var)
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = _parse(f, var, raw)
        if "state_dir" not in values:
            values["state_dir"] = default_state_dir(env)
        if "secrets_backend" not in values and values.get("key_vault_url"):
            values["secrets_backend"] = "keyvault"
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check()
        return settings

    def check(self) -> None:
        """Cross-field checks: the combination must make sense before anything starts."""
        if self.secrets_backend == "keyvault" and not self.key_vault_url:
            raise SettingsError("MDBATCH_SECRETS_BACKEND=keyvault needs MDBATCH_KEY_VAULT_URL")
        if self.key_vault_url and not self.key_vault_url.startswith("https://"):
            raise SettingsError(f"MDBATCH_KEY_VAULT_URL={self.key_vault_url!r} must be an https:// URL")
        if self.compute_backend == "azureml":
            missing = [
                "MDBATCH_" + n.upper()
                for n in ("aml_subscription_id", "aml_resource_group", "aml_workspace", "aml_compute")
                if not getattr(self, n)
            ]
            if missing:
                raise SettingsError("MDBATCH_COMPUTE_BACKEND=azureml needs " + ", ".join(missing))
        if bool(self.aml_datastore) != bool(self.aml_datastore_url):
            raise SettingsError("MDBATCH_AML_DATASTORE and MDBATCH_AML_DATASTORE_URL go together")


# Fields whose variable is not simply MDBATCH_<FIELD>.
_FIELDS: dict[str, str] = {
    "storage_connection_string": "AZURE_STORAGE_CONNECTION_STRING",
    "app_service_auth": "WEBSITE_AUTH_ENABLED",  # set by App Service when authentication is on
}

# Service fields (issue 5) by type: name -> minimum.
_SERVICE_INTS: dict[str, int] = {
    "max_images": 1, "max_body_bytes": 1024, "max_list_bytes": 1024, "shard_size": 1, "max_in_flight": 1,
    "group_size": 1, "max_attempts": 1, "checkpoint_every": 1, "max_active_jobs": 1,
    "max_total_attempts": 1,
}
_SERVICE_FLOATS: dict[str, float] = {
    "output_link_days": 0.001, "poll_initial_s": 0.0, "poll_max_s": 0.0, "poll_factor": 1.0,
    "attempt_timeout_s": 1.0, "shard_timeout_s": 1.0,
}


def _parse(f: Field[Any], var: str, raw: str) -> object:
    """Parse by the tables above, else by the field's annotation (a string here) and metadata."""
    name = f.name
    if name in _SERVICE_INTS:
        return _int(var, raw, minimum=_SERVICE_INTS[name])
    if name in _SERVICE_FLOATS:
        return _float(var, raw, minimum=_SERVICE_FLOATS[name])
    if name in ("callers", "models", "classifiers"):
        return _list(raw)
    if name in ("local_roots", "private_dirs"):
        return _paths(var, raw)
    kind = str(f.type).replace(" ", "").replace("|None", "")
    meta = f.metadata
    if "choices" in meta:
        return _choice(var, raw, meta["choices"])
    if kind == "bool":
        return _bool(var, raw)
    if kind == "int":
        return _int(var, raw, meta.get("min"))
    if kind == "float":
        return _float(var, raw, meta.get("min"))
    if kind == "Path":
        return Path(raw.strip()).expanduser()
    if kind.startswith("tuple[str"):
        return _list(raw)
    return raw.strip()
