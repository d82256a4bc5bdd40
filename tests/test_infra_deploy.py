"""What the deployment files must say, checked offline (no Bicep compiler or Azure CLI here).

These read infra/*.bicep and .funcignore as text and check their intent against the code that
depends on it: role assignments, the App Insights wiring, the Event Grid filter against the blob
door's own status-file naming, the app settings against Settings, the package contents against
what function_app.py imports. Whether ARM accepts the files is left to `az deployment ... what-if`.
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from adapters.settings import Settings, default_state_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
MAIN = (REPO_ROOT / "infra" / "main.bicep").read_text()
EVENTGRID = (REPO_ROOT / "infra" / "eventgrid.bicep").read_text()
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"


def _block(text: str, header: str) -> str:
    """The `{...}` body that follows the first line starting with `header` (braces matched)."""
    start = text.index(header)
    i = text.index("{", start)
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i : j + 1]
    raise AssertionError(f"unbalanced braces after {header!r}")


def _resources(text: str) -> dict[str, tuple[str, str]]:
    """symbolic name -> (resource type, body)."""
    out = {}
    for m in re.finditer(r"^resource (\w+) '([^'@]+)@[^']+'", text, re.M):
        out[m.group(1)] = (m.group(2), _block(text[m.start():], m.group(0)))
    return out


def _roles(text: str) -> dict[str, str]:
    body = _block(text, "var roles =")
    return dict(re.findall(r"^\s*(\w+): '([0-9a-f-]{36})'", body, re.M))


def test_application_insights_is_workspace_based_with_entra_only_ingestion() -> None:
    res = _resources(MAIN)
    kinds = {name: kind for name, (kind, _) in res.items()}
    insights = next(body for kind, body in res.values() if kind == "Microsoft.Insights/components")
    (logs,) = [n for n, k in kinds.items() if k == "Microsoft.OperationalInsights/workspaces"]
    assert re.search(rf"WorkspaceResourceId:\s*{logs}\.id", insights)
    assert "DisableLocalAuth: true" in insights
    # the app authenticates its telemetry with its identity
    assert "{ name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'Authorization=AAD' }" in MAIN


def test_the_app_identity_may_publish_telemetry() -> None:
    roles = _roles(MAIN)
    assert roles["monitoringMetricsPublisher"] == MONITORING_METRICS_PUBLISHER
    insights_name = next(n for n, (k, _) in _resources(MAIN).items() if k == "Microsoft.Insights/components")
    grants = [body for kind, body in _resources(MAIN).values()
              if kind == "Microsoft.Authorization/roleAssignments"
              and "roles.monitoringMetricsPublisher" in body]
    assert len(grants) == 1
    assert re.search(rf"scope:\s*{insights_name}\b", grants[0])
    assert "principalId: app.identity.principalId" in grants[0]


def test_every_role_definition_is_used_and_well_formed() -> None:
    roles = _roles(MAIN)
    assert len(roles) >= 10
    for name, guid in roles.items():
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", guid), name
        assert MAIN.count(f"roles.{name}") >= 1, f"role {name} is declared but never assigned"


def _event_grid_passes(filter_body: str, subject: str) -> bool:
    """Event Grid's subject filters as documented: begins/ends (case-insensitive by default) AND
    every advanced filter; StringNotEndsWith passes when the key ends with none of the values."""
    begins = re.search(r"subjectBeginsWith: '([^']*)'", filter_body).group(1)  # type: ignore[union-attr]
    ends = re.search(r"subjectEndsWith: '([^']*)'", filter_body).group(1)  # type: ignore[union-attr]
    begins = begins.replace("${requestsContainer}", "detection-requests")
    s = subject.lower()
    if not (s.startswith(begins.lower()) and s.endswith(ends.lower())):
        return False
    for op, key, values in re.findall(
        r"operatorType: '(\w+)'\s*key: '(\w+)'\s*values: \[([^\]]*)\]", filter_body
    ):
        assert key.lower() == "subject" and op == "StringNotEndsWith", (op, key)
        vals = [v.strip().strip("'") for v in values.split(",")]
        vals = [re.search(r"param statusSuffix string = '([^']*)'", EVENTGRID).group(1)  # type: ignore[union-attr]
                if v == "statusSuffix" else v for v in vals]
        if any(s.endswith(v.lower()) for v in vals):
            return False
    return True


def test_event_grid_fires_for_requests_not_for_the_doors_status_files() -> None:
    from triggers.blobdoor import STATUS_SUFFIX

    body = _block(EVENTGRID, "    filter: {")
    prefix = "/blobServices/default/containers/detection-requests/blobs/"
    request = "site1/batch.json"
    status = request + STATUS_SUFFIX  # what the door writes beside it (triggers/blobdoor.py)
    assert _event_grid_passes(body, prefix + request)
    assert _event_grid_passes(body, prefix + "UPPER.JSON")
    assert not _event_grid_passes(body, prefix + status)
    assert not _event_grid_passes(body, prefix + "notes.txt")
    assert not _event_grid_passes(body, "/blobServices/default/containers/other/blobs/x.json")
    assert "Microsoft.Storage.BlobCreated" in body


def test_app_settings_are_settings_the_app_knows_and_state_goes_to_tmp() -> None:
    body = _block(MAIN, "    siteConfig: {")
    names = re.findall(r"\{ name: '(MDBATCH_\w+)', value: ([^}]*)\}", body)
    known = {"MDBATCH_" + f.upper() for f in Settings.__dataclass_fields__}
    assert names and {n for n, _ in names} <= known, {n for n, _ in names} - known
    literal = {n: v.strip().strip("'") for n, v in names}
    assert literal["MDBATCH_STATE_DIR"].startswith("/tmp/")
    assert literal["MDBATCH_STAGING_DIR"].startswith("/tmp/")
    s = Settings.from_env({"MDBATCH_STATE_DIR": literal["MDBATCH_STATE_DIR"],
                           "MDBATCH_STAGING_DIR": literal["MDBATCH_STAGING_DIR"]})
    assert s.state_dir == Path("/tmp/mdbatch-state") and s.staging_path == Path("/tmp/mdbatch-staging")


def test_default_state_dir_avoids_an_azure_app_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = tmp_path / "wwwroot"
    app.mkdir()
    monkeypatch.chdir(app)
    assert default_state_dir({}) == app / ".mdbatch"
    assert default_state_dir({"WEBSITE_INSTANCE_ID": "abc"}) == Path(tempfile.gettempdir()) / "mdbatch-state"


def test_default_state_dir_avoids_a_read_only_app_folder(tmp_path: Path) -> None:
    """The app folder mounted read-only (a package mount), in a private mount namespace of a subprocess."""
    app = tmp_path / "wwwroot"
    app.mkdir()
    probe = ("from adapters.settings import Settings; s = Settings.from_env({}); "
             "print(s.state_dir); print(s.staging_path)")
    script = (f"mount --bind {app} {app} && mount -o remount,bind,ro {app} && cd {app} && "
              f"touch x 2>/dev/null && echo WRITABLE; {sys.executable} -c '{probe}'")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert "WRITABLE" not in lines, "the bind mount did not make the folder read-only"
    tmp = Path(tempfile.gettempdir())
    assert lines == [str(tmp / "mdbatch-state"), str(tmp / "mdbatch-staging")]


def _funcignored(path: str, patterns: list[str]) -> bool:
    for p in patterns:
        if p.endswith("/"):
            if path == p[:-1] or path.startswith(p) or f"/{p}" in f"/{path}/":
                return True
        elif fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path.rsplit("/", 1)[-1], p):
            return True
    return False


def test_funcignore_keeps_the_app_and_drops_the_rest() -> None:
    patterns = [ln.strip() for ln in (REPO_ROOT / ".funcignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    for dropped in (".venv/bin/python", ".tools/node_modules/x", "tests/test_x.py", ".git/config",
                    "local.settings.json", "bench/run.py", "mdbatch-results/x.json",
                    "scoring/__pycache__/a.pyc"):
        assert _funcignored(dropped, patterns), dropped
    kept = ["function_app.py", "host.json", "requirements.txt", "scoring/__main__.py", "scoring/engine.py"]
    # every package function_app.py imports from this repository ships
    for m in re.findall(r"^from (\w+)\.", (REPO_ROOT / "function_app.py").read_text(), re.M):
        kept.append(f"{m}/__init__.py")
    for path in kept:
        assert (REPO_ROOT / path).exists(), path
        assert not _funcignored(path, patterns), path
