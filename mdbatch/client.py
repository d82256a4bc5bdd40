"""A small HTTP client for the service's API (issue 5), stdlib only.

Every failure becomes a CliError whose message says what to do: the CLI never
shows a traceback for an unreachable API, a bad key or a refused request.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdbatch.errors import CliError

KEY_ENV = "MDBATCH_API_KEY"
CALLER_ENV = "MDBATCH_CALLER"
API_ENV = "MDBATCH_API_URL"
TERMINAL_STATES = frozenset({"completed", "failed", "canceled", "cancelled", "terminated"})


@dataclass
class ApiClient:
    """Talks to one deployment: base URL like http://127.0.0.1:7071 or https://APP.azurewebsites.net."""

    base_url: str
    key: str | None = None
    timeout: float = 30.0
    caller: str | None = None  # sent as ?caller= (services with a caller allowlist, blob-door jobs)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        if self.base_url.endswith("/api"):
            self.base_url = self.base_url[: -len("/api")]
        parsed = urllib.parse.urlparse(self.base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise CliError(f"--api {self.base_url!r} is not a URL; pass e.g. --api https://APP.azurewebsites.net")

    # --- plumbing ----------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        url = self.base_url + path
        if self.caller:
            url += ("&" if "?" in url else "?") + "caller=" + urllib.parse.quote(self.caller)
        return url

    def request(self, method: str, path: str, body: Any = None, *, ok404: bool = False) -> Any:
        """JSON in, JSON out; raise CliError with the fix on every failure."""
        url = self._url(path)
        data = None
        headers = {"Accept": "application/json", **self.headers}
        if self.key:
            headers["x-functions-key"] = self.key
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
            if e.code == 404 and ok404:
                return None
            raise CliError(self._http_message(e.code, text, url)) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            reason = getattr(e, "reason", e)
            raise CliError(
                f"cannot reach the API at {self.base_url} ({reason}); check --api (or {API_ENV}) "
                "and that the service is running (mdbatch serve starts one here)"
            ) from None
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            raise CliError(f"{url} did not answer with JSON; is --api {self.base_url} the detection service?"
                           ) from None

    def _http_message(self, code: int, text: str, url: str) -> str:
        detail = text.strip()
        try:
            obj = json.loads(text)
            if isinstance(obj, dict):
                detail = str(obj.get("error") or obj.get("message") or obj.get("Message")
                             or obj.get("errors") or obj)
        except ValueError:
            pass
        detail = " ".join(detail.split())[:400]
        if code in (401, 403):
            return (f"the API refused the key ({code}{': ' + detail if detail else ''}); pass the right one "
                    f"with --key or {KEY_ENV} (mdbatch serve prints it)")
        if code == 404:
            return f"not found: {url} ({detail or 'no such job or route'}); check the request id and --api"
        if code == 400:
            return f"the service refused the request: {detail}"
        if code == 503:
            return f"the service is busy or unavailable (503: {detail}); try again later"
        return f"the API answered {code} for {url}: {detail}"

    # --- the API ---------------------------------------------------------------------------

    def submit(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/api/detections", request)

    def get(self, request_id: str) -> dict[str, Any] | None:
        return self.request("GET", f"/api/detections/{urllib.parse.quote(request_id)}", ok404=True)

    def list(self, state: str | None = None) -> Any:
        q = f"?state={urllib.parse.quote(state)}" if state else ""
        return self.request("GET", "/api/detections" + q)

    def cancel(self, request_id: str) -> dict[str, Any]:
        return self.request("POST", f"/api/detections/{urllib.parse.quote(request_id)}/cancel", {})

    def models(self) -> Any:
        return self.request("GET", "/api/models")

    def download(self, url: str, dest: Path) -> None:
        """Fetch a published output link (https SAS, http from the embedded host, or file://) to dest."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        parsed = urllib.parse.urlparse(url)
        try:
            if parsed.scheme == "file":
                src = Path(urllib.request.url2pathname(parsed.path))
                shutil.copyfile(src, tmp)
            else:
                headers = {}
                if self.key and url.startswith(self.base_url):
                    headers["x-functions-key"] = self.key
                req = urllib.request.Request(url, headers=headers)
                with urllib.request.urlopen(req, timeout=max(self.timeout, 120)) as resp, tmp.open("wb") as f:
                    shutil.copyfileobj(resp, f, 1 << 20)
        except urllib.error.HTTPError as e:
            tmp.unlink(missing_ok=True)
            cls = LinkRefused if e.code in (401, 403) else CliError
            raise cls(f"cannot download the results ({e.code}); the link may have expired: "
                      "run `mdbatch status ID` for fresh links") from None
        except (OSError, urllib.error.URLError) as e:
            tmp.unlink(missing_ok=True)
            where = f"{parsed.scheme}://{parsed.netloc}"
            raise CliError(f"cannot download the results from {where} ({e})") from None
        os.replace(tmp, dest)


    def download_result(self, request_id: str, dest: Path, kind: str = "detections",
                        urls: dict[str, str] | None = None) -> None:
        """Download one result file of a job, following its links; links are signed when the status
        is read, so one the storage refuses (expired) is replaced by reading the status again."""
        for attempt in (1, 2):
            if urls is None or attempt == 2:
                urls = output_urls(self.get(request_id) or {})
            if kind not in urls:
                raise CliError(f"request {request_id} has no {kind} link; see `mdbatch status {request_id}`")
            try:
                self.download(urls[kind], dest)
                return
            except LinkRefused:
                if attempt == 2:
                    raise


class LinkRefused(CliError):
    """The storage (or the service's download route) refused a result link: expired or revoked."""


def state_of(status: dict[str, Any] | None) -> str:
    """The job's state in lower case, from the curated status or a durable status payload."""
    if not status:
        return "unknown"
    for k in ("state", "status", "runtimeStatus"):
        v = status.get(k)
        if isinstance(v, str):
            return v.lower()
    return "unknown"


def output_urls(status: dict[str, Any]) -> dict[str, str]:
    """The published links (detections, failed_images, images) wherever the payload keeps them."""
    for holder in (status, status.get("output") or {}, status.get("result") or {}):
        if isinstance(holder, dict):
            urls = holder.get("output_file_urls") or holder.get("outputs") or holder.get("output_urls")
            if isinstance(urls, dict) and urls:
                return {str(k): str(v) for k, v in urls.items()}
    return {}


def progress_of(status: dict[str, Any]) -> dict[str, Any]:
    """Progress numbers (stage, images_total, images_scored, shards_total/done/failed), flattened."""
    out: dict[str, Any] = {}
    for holder in (status.get("customStatus"), status.get("progress"), status.get("counts"), status):
        if isinstance(holder, dict):
            for k, v in holder.items():
                out.setdefault(k, v)
    return out
