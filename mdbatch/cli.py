"""`mdbatch`: run camera-trap detection on a folder, or drive a deployed service.

Errors a user can fix print as one line with the fix (exit code 2), never a
traceback. Exit codes: 0 done, 1 the job failed, 2 bad input, 130 canceled.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.parse
import webbrowser
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from mdbatch import paths
from mdbatch.client import (
    API_ENV,
    CALLER_ENV,
    KEY_ENV,
    TERMINAL_STATES,
    ApiClient,
    output_urls,
    progress_of,
    state_of,
)
from mdbatch.errors import CliError

app = typer.Typer(
    name="mdbatch",
    help="Camera-trap detection (MegaDetector family) in batch: on this machine or on a deployed service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

DEFAULT_PORT = 7071
ApiOpt = Annotated[str | None, typer.Option("--api", help=f"service URL (default ${API_ENV}, else the local "
                                                          f"`mdbatch serve` at http://127.0.0.1:{DEFAULT_PORT})")]
KeyOpt = Annotated[str | None, typer.Option("--key", help=f"function key (default ${KEY_ENV}, else the local "
                                                          "service's key)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the raw JSON answer")]
CallerOpt = Annotated[str | None, typer.Option("--caller", help=f"who you are to the service (default "
                                                                f"${CALLER_ENV}); needed where callers are "
                                                                "allowlisted")]


def main() -> None:
    """Console-script entry: one clear line for every user-fixable error."""
    try:
        app()
    except CliError as e:
        err.print(f"[bold red]error:[/] {e}", soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


# --- helpers ------------------------------------------------------------------------------------

def _client(api: str | None, key: str | None, caller: str | None = None) -> ApiClient:
    url = api or os.environ.get(API_ENV) or f"http://127.0.0.1:{DEFAULT_PORT}"
    k = key or os.environ.get(KEY_ENV)
    host = urllib.parse.urlparse(url).hostname or ""
    if k is None and host in ("127.0.0.1", "localhost", "::1"):  # this machine's `mdbatch serve`
        from mdbatch.local import read_key

        k = read_key(paths.service_dir())
    return ApiClient(url, k, caller=caller or os.environ.get(CALLER_ENV) or None)


def _request_name(folder: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", folder.name).strip("-") or "images"
    return name[:92]


def _check_folder(path: Path) -> Path:
    if not path.exists():
        raise CliError(f"folder not found: {path}; pass the folder that holds your images")
    if not path.is_dir():
        raise CliError(f"{path} is not a folder; pass the folder that holds your images")
    if not os.access(path, os.R_OK | os.X_OK):
        raise CliError(f"cannot read folder {path}; check its permissions")
    if paths.count_images(path, limit=1) == 0:
        exts = ", ".join(paths.IMAGE_EXTENSIONS)
        raise CliError(f"no images found in {path} (looked for {exts}, in subfolders too); "
                       "pass the folder that holds your images")
    return path.resolve()


def summary_table(results: dict[str, Any], threshold: float, title: str) -> Group:
    """images; with animal/person/vehicle at or above the model's typical threshold; empty; failed."""
    from mdbatch.preview import summarize

    counts = summarize(results, threshold)
    n = counts["images"] or 1
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    t.add_column("", style="bold")
    t.add_column("images", justify="right")
    t.add_column("share", justify="right")
    t.add_row("images", f"{counts['images']:,}", "")
    cats = [str(v) for v in (results.get("detection_categories") or {}).values()]
    for name in cats:
        t.add_row(f"with {name}", f"{counts.get(name, 0):,}", f"{100 * counts.get(name, 0) / n:.0f}%")
    t.add_row("empty", f"{counts['empty']:,}", f"{100 * counts['empty'] / n:.0f}%")
    t.add_row("failed", f"{counts['failed']:,}", f"{100 * counts['failed'] / n:.0f}%")
    from mdbatch.preview import summarize_species  # issue 12: species rows when classified

    for name, k in summarize_species(results, threshold).items():
        t.add_row(f"  species {name}", f"{k:,}", f"{100 * k / n:.0f}%")
    return Group(Text(title, style="bold"), t)


def _write_preview(results_path: Path, images: Path | None, preview_path: Path, quiet: bool = False) -> Path:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from mdbatch.preview import PreviewError, write_preview

    try:
        with Progress(TextColumn("thumbnails"), BarColumn(bar_width=30), MofNCompleteColumn(),
                      console=out, transient=True, disable=quiet or not out.is_terminal) as bar:
            task = bar.add_task("thumbs", total=None)
            stats = write_preview(results_path, images, preview_path,
                                  progress=lambda d, t: bar.update(task, completed=d, total=t))
    except PreviewError as e:
        raise CliError(str(e)) from None
    return stats.path


def _print_status(status: dict[str, Any]) -> None:
    p = progress_of(status)
    rid = status.get("request_id") or status.get("id") or status.get("instanceId")
    rows = [("request", rid), ("state", state_of(status)), ("stage", p.get("stage")),
            ("images", p.get("images_total")), ("scored", p.get("images_scored")),
            ("shards", f"{p.get('shards_done', '-')}/{p.get('shards_total', '-')}"
                       + (f" ({p['shards_failed']} failed)" if p.get("shards_failed") else "")),
            ("created", status.get("created") or status.get("createdTime")),
            ("updated", status.get("updated") or status.get("lastUpdatedTime")),
            ("error", status.get("error") or status.get("message"))]
    rows += list(output_urls(status).items())
    for k, v in rows:
        if v not in (None, "", "-/-"):
            out.print(f"[bold]{k:<13}[/] {v}", soft_wrap=True)  # links in full, never cut


# --- detect ---------------------------------------------------------------------------------------

@app.command()
def detect(
    folder: Annotated[Path, typer.Argument(help="folder of camera-trap images (subfolders included)")],
    model: Annotated[str, typer.Option("--model", "-m", help="demo, a known name (MDV5A, MDV5B, "
                                       "MDV1000-REDWOOD, ...) or a .onnx/.pt file")] = "MDV5A",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="results JSON (default "
                                                "mdbatch-results/FOLDER.json)")] = None,
    threshold: Annotated[float | None, typer.Option("--threshold", help="lowest confidence kept in the "
                                                    "results (default: the service's, 0.005)")] = None,
    workers: Annotated[int, typer.Option("--workers", help="scoring processes")] = 1,
    port: Annotated[int, typer.Option("--port", help="port of the embedded service (0 = any free)")] = 0,
    preview: Annotated[bool, typer.Option("--preview/--no-preview", help="write the preview page")] = True,
    restart: Annotated[bool, typer.Option("--restart", help="start over instead of resuming")] = False,
    classifier: Annotated[str | None, typer.Option("--classifier", help="also name the species in animal "
                                                   "boxes: demo, an installed classifier or a .onnx "
                                                   "with its manifest")] = None,
    country: Annotated[str | None, typer.Option("--country", help="ISO 3166-1 alpha-3 code of where the "
                                                "photos were taken (with --classifier)")] = None,
    admin1_region: Annotated[str | None, typer.Option("--admin1-region", help="region within --country, "
                                                      "e.g. CA")] = None,
    ensemble: Annotated[bool, typer.Option("--ensemble", help="SpeciesNet's ensemble on the species "
                                           "(geofence by --country, roll-up)")] = False,
) -> None:
    """Detect animals, people and vehicles in a folder on this machine (embedded service)."""
    from mdbatch import classifiers, local, models

    folder = _check_folder(folder)
    if threshold is not None and not 0 < threshold <= 1:
        raise CliError(f"--threshold {threshold} must be in (0, 1]")
    if workers < 1:
        raise CliError("--workers must be at least 1")
    output = (output or Path("mdbatch-results") / f"{folder.name}.json").resolve()
    resolved = models.resolve(model, log=lambda s: out.print(s))
    cls = classifiers.resolve(classifier) if classifier else None  # issue 12
    if (country or admin1_region or ensemble) and cls is None:
        raise CliError("--country, --admin1-region and --ensemble go with --classifier")
    home = paths.home()
    key = local.job_key(folder, resolved.name if cls is None else
                        f"{resolved.name}+{cls.name}+{country}+{admin1_region}+{ensemble}", threshold)
    started = time.monotonic()
    out.print(f"detecting in [bold]{folder}[/] with model [bold]{resolved.name}[/]"
              + (f" and classifier [bold]{cls.name}[/]" if cls else ""))
    n_images = paths.count_images(folder)
    with local.run_host(port, workers, paths.models_dir(), resolved.name,
                        log_file=home / "logs" / "service.log",
                        shard_size=local.shard_size_for(n_images, workers), roots=[folder]) as svc:
        client = ApiClient(svc.base_url, svc.key, timeout=60)
        request_id = None if restart else local.journal_get(key)
        answer: dict[str, Any] | None = None
        if request_id:
            previous = client.get(request_id)
            if previous is None or state_of(previous) in ("failed", "canceled", "cancelled", "terminated"):
                request_id = None
            else:
                out.print(f"resuming request {request_id} ({state_of(previous)})")
        if request_id is None:
            body: dict[str, Any] = {"input_container_sas": folder.as_uri(), "model_version": resolved.name,
                                    "request_name": _request_name(folder)}
            if threshold is not None:
                body["detection_threshold"] = threshold
            if cls is not None:  # issue 12
                body["classifier_version"] = cls.name
                body.update({k: v for k, v in (("country", country), ("admin1_region", admin1_region),
                                               ("ensemble", ensemble)) if v})
            answer = client.submit(body)
            request_id = str(answer.get("id") or answer.get("request_id"))
            local.journal_put(key, request_id, {"folder": str(folder), "model": resolved.name,
                                                "threshold": threshold})
        try:
            if answer is not None:
                out.print(f"request {request_id} submitted")
            status = _follow(client, request_id)
        except KeyboardInterrupt:
            final = _cancel_quietly(client, request_id)
            local.journal_drop(key)
            err.print(f"canceled request {request_id} (service state: {final}); "
                      "run the same command to start again")
            raise typer.Exit(130) from None
        state = state_of(status)
        if state != "completed":
            reason = status.get("error") or status.get("message") or "no reason given"
            local.journal_drop(key)
            err.print(f"[bold red]error:[/] request {request_id} ended {state}: {reason}; "
                      f"the service log is {home / 'logs' / 'service.log'}")
            raise typer.Exit(1)
        urls = output_urls(status)
        if "detections" not in urls:
            raise CliError(f"request {request_id} completed without a detections link; see {home / 'logs'}")
        client.download_result(request_id, output, urls=urls)
        local.journal_drop(key)  # finished: the same command later starts a fresh run
    results = json.loads(output.read_text())
    from mdbatch.preview import typical_threshold

    thr = typical_threshold(results) if (results.get("info") or {}).get("detector_metadata") \
        else resolved.typical_threshold
    title = f"Summary at confidence >= {thr:g} (the model's typical threshold)"
    out.print(summary_table(results, thr, title))
    out.print(f"results: {output}")
    if preview:
        page = _write_preview(output, folder, output.with_suffix(".html"))
        out.print(f"preview: {page}")
    out.print(f"done in {time.monotonic() - started:.1f}s")
    _fail_if_nothing_scored(results, home)


def _fail_if_nothing_scored(results: dict[str, Any], home: Path) -> None:
    """Every image failed (a model the scorer cannot load, unreadable files): that is no success."""
    images = results.get("images") or []
    if not images or any("failure" not in im or im.get("failure") is None for im in images):
        return
    reason = str(images[0].get("failure"))
    err.print(f"[bold red]error:[/] no image could be scored ({len(images):,} failed; first reason: "
              f"{reason}); the service log is {home / 'logs' / 'service.log'}", soft_wrap=True)
    raise typer.Exit(1)


def _follow(client: ApiClient, request_id: str) -> dict[str, Any]:
    from mdbatch.follow import follow

    return follow(client, request_id, out)


def _cancel_quietly(client: ApiClient, request_id: str) -> str:
    """Ctrl-C: ask the service to cancel and wait (briefly) until it says so; return its final state."""
    err.print("canceling... (Ctrl-C again to stop waiting)")
    state = "unknown"
    try:
        client.cancel(request_id)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = state_of(client.get(request_id))
            if state in TERMINAL_STATES:
                break
            time.sleep(0.5)
    except (CliError, KeyboardInterrupt):
        pass
    return state


# --- serve ----------------------------------------------------------------------------------------

@app.command()
def serve(
    port: Annotated[int, typer.Option("--port", help="port to listen on (0 = any free)")] = DEFAULT_PORT,
    workers: Annotated[int, typer.Option("--workers", help="scoring processes")] = 1,
    model: Annotated[str | None, typer.Option("--model", "-m", help="also make this model available "
                                              "(demo, a known name or a file) and the default")] = None,
    root: Annotated[list[Path] | None, typer.Option("--root", help="a folder whose subfolders callers may "
                                                   "submit as local sources (repeatable; adds to "
                                                   "MDBATCH_LOCAL_ROOTS)")] = None,
) -> None:
    """Run the embedded service in the foreground (local folders, local compute) until Ctrl-C."""
    from mdbatch import local, models

    for r in root or []:
        if not r.is_dir():
            raise CliError(f"--root {r} is not a folder; pass a folder callers may read images from")
    models.resolve(models.DEMO)  # always there, built once: the offline model
    default = models.resolve(model, log=lambda s: out.print(s)).name if model else _serve_default()
    with local.run_host(port, workers, paths.models_dir(), default,
                        log_file=paths.home() / "logs" / "service.log", roots=root or []) as svc:
        out.print(f"mdbatch service listening on [bold]{svc.base_url}[/]")
        out.print(f"key: {svc.key or '(none: keys not enforced)'}")
        out.print(f"default model: {default}")
        roots = [r for r in os.environ.get("MDBATCH_LOCAL_ROOTS", "").split(os.pathsep) if r]
        out.print(f"local folders: under {', '.join(roots)}" if roots
                  else "local folders: none (add --root FOLDER or set MDBATCH_LOCAL_ROOTS)")
        drop = local.inbox_dir() / "detection-requests"
        drop.mkdir(parents=True, exist_ok=True)
        out.print(f"requests dropped here start too: {drop}")
        out.print(f"state: {svc.state_dir}   log: {paths.home() / 'logs' / 'service.log'}")
        out.print("Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            out.print("stopping")


def _serve_default() -> str:
    """Without --model the default must be a model this service has: MDV5A once it is here, else demo.

    The service lists its default model as supported even without its file (in Azure it is a
    registered asset), so a default of MDV5A with no MDV5A.onnx would accept requests that then
    fail on every image.
    """
    from mdbatch import models

    known = models.KNOWN_MODELS["MDV5A"].name
    return known if (paths.models_dir() / f"{known}.onnx").is_file() else models.DEMO


# --- remote commands ------------------------------------------------------------------------------

@app.command()
def submit(
    source: Annotated[str, typer.Argument(help="container SAS URL (https://...), or a local folder when the "
                                          "service allows local storage")] = "",
    api: ApiOpt = None, key: KeyOpt = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="model_version")] = None,
    request_file: Annotated[Path | None, typer.Option("--request", help="send this JSON as is")] = None,
    images_list: Annotated[str | None, typer.Option("--images-list", help="list SAS URL")] = None,
    prefix: Annotated[str | None, typer.Option("--prefix", help="image_path_prefix")] = None,
    first_n: Annotated[int | None, typer.Option("--first-n")] = None,
    sample_n: Annotated[int | None, typer.Option("--sample-n")] = None,
    threshold: Annotated[float | None, typer.Option("--threshold", help="detection_threshold")] = None,
    name: Annotated[str | None, typer.Option("--name", help="request_name")] = None,
    caller: CallerOpt = None,
    use_url: Annotated[bool, typer.Option("--use-url", help="the list holds full image URLs")] = False,
    classifier: Annotated[str | None, typer.Option("--classifier", help="classifier_version: also "
                                                   "classify animal boxes")] = None,
    country: Annotated[str | None, typer.Option("--country", help="country (ISO 3166-1 alpha-3)")] = None,
    admin1_region: Annotated[str | None, typer.Option("--admin1-region", help="admin1_region")] = None,
    ensemble: Annotated[bool, typer.Option("--ensemble", help="SpeciesNet's ensemble")] = False,
    wait_: Annotated[bool, typer.Option("--wait", help="follow the job to its end")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Submit a detection request (POST /api/detections); prints the request id."""
    if request_file is not None:
        try:
            body = json.loads(request_file.read_text())
        except (OSError, ValueError) as e:
            raise CliError(f"cannot read request file {request_file} ({e}); pass a JSON request") from None
    else:
        body = {}
        if source:
            if source.startswith(("https://", "http://", "file://")):
                body["input_container_sas"] = source
            else:
                body["input_container_sas"] = _check_folder(Path(source)).as_uri()
        elif not use_url:
            raise CliError("pass a container SAS URL or folder to submit, or --request FILE.json")
        if images_list and "://" not in images_list:  # a local list: the service takes absolute paths only
            images_list = Path(images_list).expanduser().resolve().as_uri()
        for k, v in (("model_version", model), ("images_requested_json_sas", images_list),
                     ("image_path_prefix", prefix), ("first_n", first_n), ("sample_n", sample_n),
                     ("detection_threshold", threshold), ("request_name", name),
                     ("classifier_version", classifier), ("country", country),
                     ("admin1_region", admin1_region),
                     ("caller", caller or os.environ.get(CALLER_ENV) or None)):
            if v is not None:
                body[k] = v
        if use_url:
            body["use_url"] = True
        if ensemble:
            body["ensemble"] = True
    client = _client(api, key, caller)
    answer = client.submit(body)
    rid = str(answer.get("id") or answer.get("request_id"))
    if as_json:
        out.print_json(data=answer)
    else:
        out.print(f"request {rid} submitted")
        if answer.get("statusQueryGetUri"):
            out.print(f"status: {_redact(answer['statusQueryGetUri'])}")
    if wait_:
        _wait(client, rid, None)


def _redact(url: str) -> str:
    return re.sub(r"(code|sig)=[^&]+", r"\1=***", url)


@app.command()
def status(request_id: str, api: ApiOpt = None, key: KeyOpt = None, caller: CallerOpt = None,
           as_json: JsonOpt = False) -> None:
    """Show a job's state, progress and output links."""
    st = _client(api, key, caller).get(request_id)
    if st is None:
        raise CliError(f"no job {request_id} for this caller; `mdbatch list` shows yours")
    if as_json:
        out.print_json(data=st)
    else:
        _print_status(st)


def _wait(client: ApiClient, request_id: str, output: Path | None, images: Path | None = None) -> None:
    if client.get(request_id) is None:
        raise CliError(f"no job {request_id} for this caller; `mdbatch list` shows yours")
    from mdbatch.follow import follow

    st = follow(client, request_id, out)
    state = state_of(st)
    if state != "completed":
        err.print(f"request {request_id} ended {state}: {st.get('error') or st.get('message') or ''}")
        raise typer.Exit(1)
    urls = output_urls(st)
    for k, v in urls.items():
        out.print(f"{k}: {v}", soft_wrap=True)  # links in full on one line, never cut
    if output is not None:
        if "detections" not in urls:
            raise CliError("the job has no detections link; see `mdbatch status`")
        client.download_result(request_id, output, urls=urls)
        results = json.loads(output.read_text())
        from mdbatch.preview import typical_threshold

        thr = typical_threshold(results)
        out.print(summary_table(results, thr, f"Summary at confidence >= {thr:g}"))
        out.print(f"results: {output.resolve()}")
        if images is not None:
            out.print(f"preview: {_write_preview(output, images, output.with_suffix('.html'))}")


@app.command()
def wait(
    request_id: str, api: ApiOpt = None, key: KeyOpt = None, caller: CallerOpt = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="download the results here")] = None,
    images: Annotated[Path | None, typer.Option("--images", help="local copy of the images: also write "
                                                "the preview page")] = None,
) -> None:
    """Follow a job with a progress bar until it ends; optionally download its results."""
    _wait(_client(api, key, caller), request_id, output, images)


@app.command()
def cancel(request_id: str, api: ApiOpt = None, key: KeyOpt = None, caller: CallerOpt = None) -> None:
    """Cancel a job (its running compute jobs are cancelled too)."""
    answer = _client(api, key, caller).cancel(request_id)
    state = answer.get("state") if isinstance(answer, dict) else None
    message = answer.get("message") if isinstance(answer, dict) else None
    out.print(f"request {request_id}: {message or state or 'cancel requested'}")


@app.command("list")
def list_(
    api: ApiOpt = None, key: KeyOpt = None, caller: CallerOpt = None,
    state: Annotated[str | None, typer.Option("--state", help="only jobs in this state")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Your jobs, newest first."""
    answer = _client(api, key, caller).list(state)
    jobs = answer.get("jobs", answer.get("items", [])) if isinstance(answer, dict) else answer
    if as_json:
        out.print_json(data=answer)
        return
    t = Table(show_edge=False, pad_edge=False)
    ids = [str(j.get("request_id") or j.get("id")) for j in jobs or []]
    # the request id is what the other commands take: never cut it, squeeze the other columns
    t.add_column("request", no_wrap=True, min_width=max((len(i) for i in ids), default=7))
    t.add_column("state", no_wrap=True, min_width=9)
    for c in ("stage", "images", "created", "name"):
        t.add_column(c)
    for j in jobs or []:
        p = progress_of(j)
        t.add_row(str(j.get("request_id") or j.get("id")), state_of(j), str(p.get("stage") or ""),
                  str(p.get("images_total") or ""),
                  str(j.get("created") or j.get("createdTime") or "")[:16].replace("T", " "),
                  str(j.get("request_name") or ""))
    out.print(t if jobs else "no jobs")


@app.command("models")
def models_cmd(api: ApiOpt = None, key: KeyOpt = None, as_json: JsonOpt = False,
               known: Annotated[bool, typer.Option("--known", help="list the model names this CLI "
                                                   "downloads, without asking a service")] = False) -> None:
    """Model versions the service supports, and its default."""
    if known:
        from mdbatch.models import KNOWN_MODELS

        t = Table(show_edge=False, pad_edge=False)
        t.add_column("name")
        t.add_column("url")
        t.add_row("demo", "built here, no download: reports pure red/green/blue rectangles")
        for m in KNOWN_MODELS.values():
            t.add_row(m.name, m.url)
        out.print(t)
        return
    answer = _client(api, key).models()
    if as_json or not isinstance(answer, dict):
        out.print_json(data=answer)
        return
    supported = (answer.get("supported") or answer.get("models")
                 or answer.get("supported_model_versions") or [])
    default = answer.get("default") or answer.get("default_model_version")
    for m in supported:
        name = m if isinstance(m, str) else m.get("name")
        out.print(f"{name}{'  (default)' if name == default else ''}")
    for c in answer.get("classifiers") or []:  # issue 12
        out.print(f"{c}  (classifier)")


# --- view -------------------------------------------------------------------------------------------

@app.command()
def view(
    results: Annotated[Path, typer.Argument(help="results JSON (MegaDetector batch output format)")],
    images: Annotated[Path | None, typer.Option("--images", help="folder the results' file names are "
                                                "relative to (for thumbnails)")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="page to write (default "
                                                "RESULTS.html)")] = None,
    open_: Annotated[bool, typer.Option("--open/--no-open", help="open it in the browser")] = True,
    thumbs: Annotated[str, typer.Option("--thumbs", help="auto, inline (one file) or folder "
                                        "(a NAME_files folder beside the page)")] = "auto",
    min_conf: Annotated[float, typer.Option("--min-conf", help="boxes below this are left out of the "
                                            "page")] = 0.05,
) -> None:
    """Write the preview page for a results file (and open it)."""
    from mdbatch.preview import PreviewError, write_preview

    if images is not None and not images.is_dir():
        raise CliError(f"--images {images} is not a folder; pass the folder the results' file names are "
                       "relative to")
    page = (output or results.with_suffix(".html")).resolve()
    if page == results.resolve():
        raise CliError("--output would overwrite the results file; pass another name")
    try:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        with Progress(TextColumn("thumbnails"), BarColumn(bar_width=30), MofNCompleteColumn(),
                      console=out, transient=True, disable=not out.is_terminal) as bar:
            task = bar.add_task("thumbs", total=None)
            stats = write_preview(results, images.resolve() if images else None, page, floor=min_conf,
                                  thumbs=thumbs, progress=lambda d, t: bar.update(task, completed=d, total=t))
    except PreviewError as e:
        raise CliError(str(e)) from None
    out.print(f"preview: {stats.path}  ({stats.images:,} images, {stats.thumbnails:,} thumbnails"
              + (f", {stats.missing:,} without a picture" if stats.missing else "") + ")")
    if open_:
        webbrowser.open(stats.path.as_uri())


if __name__ == "__main__":
    main()
