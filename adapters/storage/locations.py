"""Parse and check storage location URLs before anything touches them.

A location is one of:
- `https://ACCOUNT.blob.core.windows.net/CONTAINER[/prefix][?SAS]` (host must be on the allowlist),
- `http://127.0.0.1:10000/ACCOUNT/CONTAINER[/prefix][?SAS]` (Azurite; only when `allow_azurite`),
- a local folder path or `file://` URL (only when `allow_local_storage`).

`parse_location` checks the shape and the policy; `check_sas` checks a SAS token's times and
permissions; `validate_input_location` (in `adapters.storage`) adds a round trip to the service.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from ..errors import LocationError
from ..settings import Settings

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_CONTAINER_RE = re.compile(r"^(?:[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}|\$root)$")
_ACCOUNT_RE = re.compile(r"^[a-z0-9]{3,24}$")
_FORBIDDEN_NAMES = ("metadata.google.internal", "metadata", "instance-data")
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class Location:
    """A parsed location. `url` never carries the SAS; `sas` is kept apart and never logged."""

    kind: str  # "blob" | "local"
    url: str
    account_url: str | None = None
    account_name: str | None = None
    container: str | None = None
    prefix: str = ""  # "" or "some/prefix/" for blob; "" for local
    sas: str | None = None
    path: Path | None = None
    emulator: bool = False

    def __repr__(self) -> str:  # keep the SAS out of reprs, tracebacks and logs
        return f"Location(kind={self.kind!r}, url={self.url!r}, sas={'<set>' if self.sas else None})"


def _host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(host, p.lower()) for p in patterns)


def _refuse_address(host: str) -> None:
    """Refuse IP literals that point inside the machine or its network (SSRF)."""
    if host in _FORBIDDEN_NAMES or host.endswith(".internal") or host == "localhost":
        raise LocationError("host_not_allowed", f"host {host!r} is not allowed: internal name")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return
    if ip.is_loopback or ip.is_link_local or ip.is_private or ip.is_reserved or ip.is_multicast \
            or ip.is_unspecified:
        raise LocationError(
            "host_not_allowed", f"host {host!r} is not allowed: private, loopback or link-local address"
        )


def _parse_sas(query: str) -> str | None:
    if not query:
        return None
    params = parse_qs(query, keep_blank_values=True)
    if "sig" not in params:
        raise LocationError(
            "malformed_url", "the URL has a query string that is not a SAS token (no signature)"
        )
    return query


def parse_location(url: str, settings: Settings) -> Location:
    """Parse `url` and apply the settings' policy; raise LocationError with a clear message."""
    if not isinstance(url, str) or not url.strip():
        raise LocationError("malformed_url", "the location is empty")
    url = url.strip()
    if any(ch in url for ch in ("\n", "\r", "\t", " ")):
        raise LocationError("malformed_url", "the location URL contains whitespace")
    if url.startswith("file://") or "://" not in url:
        return _parse_local(url, settings)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise LocationError("malformed_url", f"malformed URL: {exc}") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in ("http", "https"):
        raise LocationError("malformed_url", f"unsupported URL scheme {scheme!r} (use https)")
    if not host:
        raise LocationError("malformed_url", "the URL has no host")
    if parts.username or parts.password:
        raise LocationError("malformed_url", "the URL must not carry a user name or password")
    sas = _parse_sas(parts.query)
    segments = [unquote(s) for s in parts.path.split("/")]
    segments = [s for s in segments[1:]] if segments and segments[0] == "" else segments

    if host in LOOPBACK_HOSTS:
        if not settings.allow_azurite:
            raise LocationError(
                "host_not_allowed",
                f"host {host!r} is not allowed: loopback storage (Azurite) is disabled "
                "(MDBATCH_ALLOW_AZURITE)",
            )
        if len(segments) < 2 or not segments[0]:
            raise LocationError("malformed_url", "an Azurite URL is http://HOST:PORT/ACCOUNT/CONTAINER[/prefix]")
        account, container, rest = segments[0], segments[1], segments[2:]
        netloc = f"[{host}]" if ":" in host else host
        account_url = f"{scheme}://{netloc}{':' + str(port) if port else ''}/{account}"
        emulator = True
    else:
        if not _host_allowed(host, settings.allowed_hosts):
            raise LocationError(
                "host_not_allowed",
                f"host {host!r} is not on the storage allowlist ({', '.join(settings.allowed_hosts)})",
            )
        _refuse_address(host)
        if scheme != "https":
            raise LocationError("not_https", f"storage URLs must use https (got {scheme}://{host})")
        account = host.split(".")[0]
        if not segments or not segments[0]:
            raise LocationError("malformed_url", "the URL names no container (https://ACCOUNT.blob.../CONTAINER)")
        container, rest = segments[0], segments[1:]
        account_url = f"https://{host}{':' + str(port) if port else ''}"
        emulator = False
    if not _ACCOUNT_RE.match(account) and not emulator:
        raise LocationError("malformed_url", f"{account!r} is not a valid storage account name")
    if not _CONTAINER_RE.match(container):
        raise LocationError(
            "malformed_url",
            f"{container!r} is not a valid container name (3-63 lowercase letters, digits and hyphens)",
        )
    prefix_parts = [p for p in rest if p]
    if any(p in (".", "..") for p in prefix_parts):
        raise LocationError("malformed_url", "the prefix must not contain '.' or '..' segments")
    prefix = "/".join(prefix_parts) + ("/" if prefix_parts else "")
    clean = f"{account_url}/{container}" + (f"/{quote(prefix.rstrip('/'))}" if prefix else "")
    return Location(
        kind="blob", url=clean, account_url=account_url, account_name=account, container=container,
        prefix=prefix, sas=sas, emulator=emulator,
    )


def _parse_local(url: str, settings: Settings) -> Location:
    if not settings.allow_local_storage:
        raise LocationError(
            "local_not_allowed", "local folders are not allowed as storage here (MDBATCH_ALLOW_LOCAL_STORAGE)"
        )
    if url.startswith("file://"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise LocationError("malformed_url", f"file URL with a remote host {parts.netloc!r}")
        if parts.query:
            raise LocationError("malformed_url", "a file URL takes no query string")
        path = Path(unquote(parts.path))
    else:
        path = Path(url).expanduser()
    if not path.is_absolute():
        path = path.resolve()
    path = Path(*path.parts)  # normalise duplicate slashes
    if ".." in path.parts:
        path = path.resolve()
    return Location(kind="local", url=path.as_uri(), path=path)


@dataclass(frozen=True)
class SasInfo:
    """The parts of a SAS token that decide what a request may do."""

    permissions: str
    start: datetime | None
    expiry: datetime | None
    resource: str | None  # c (container), b (blob), or None for an account SAS
    policy: str | None = None  # si=: a stored access policy may hold the permissions and times
    services: str | None = None  # ss= of an account SAS (b for Blob)
    resource_types: str | None = None  # srt= of an account SAS (s service, c container, o object)


def _sas_time(name: str, raw: str) -> datetime:
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise LocationError("malformed_sas", f"the SAS {name} time {raw!r} is not a valid time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def sas_info(sas: str) -> SasInfo:
    """Decode a SAS token's permissions and validity window (no network)."""
    params = {k: v[0] for k, v in parse_qs(sas.lstrip("?"), keep_blank_values=True).items()}
    if "sig" not in params:
        raise LocationError("malformed_sas", "the SAS token has no signature")
    start = _sas_time("start", params["st"]) if params.get("st") else None
    expiry = _sas_time("expiry", params["se"]) if params.get("se") else None
    resource = params.get("sr")
    if resource is None and "srt" not in params and "si" not in params:
        raise LocationError("malformed_sas", "the SAS token names no resource (sr= or srt=)")
    return SasInfo(permissions=params.get("sp", ""), start=start, expiry=expiry, resource=resource,
                   policy=params.get("si") or None, services=params.get("ss"),
                   resource_types=params.get("srt"))


def check_sas(sas: str, *, need_read: bool = True, need_list: bool = False,
              now: datetime | None = None) -> SasInfo:
    """Check a SAS token's validity window and permissions for what the request needs."""
    info = sas_info(sas)
    now = now or datetime.now(UTC)
    if info.expiry is not None and info.expiry <= now:
        raise LocationError("sas_expired", f"the SAS token expired at {info.expiry.isoformat()}")
    if info.start is not None and info.start > now + CLOCK_SKEW:
        raise LocationError(
            "sas_not_yet_valid", f"the SAS token is not valid before {info.start.isoformat()}"
        )
    perms = info.permissions
    account_sas = info.resource is None and info.resource_types is not None
    if account_sas:
        if info.services is not None and "b" not in info.services:
            raise LocationError(
                "sas_wrong_service", "the account SAS does not cover Blob storage (ss lacks b)"
            )
        if need_read and "o" not in info.resource_types:
            raise LocationError(
                "sas_missing_read", "the account SAS does not cover blobs (srt lacks o, object)"
            )
        if need_list and "c" not in info.resource_types:
            raise LocationError(
                "sas_missing_list", "the account SAS cannot list containers' blobs (srt lacks c, container)"
            )
    # With a stored access policy (si=) and no sp= in the token, the policy holds the permissions:
    # only the service can tell, so leave it to the round trip.
    check_perms = not (info.policy and not perms)
    if need_read and check_perms and "r" not in perms:
        raise LocationError("sas_missing_read", "the SAS token lacks read (r) permission")
    if need_list:
        if info.resource in ("b", "bs", "bv"):
            raise LocationError(
                "sas_missing_list", "a blob SAS cannot list; give a container SAS with list (l)"
            )
        if check_perms and "l" not in perms:
            raise LocationError("sas_missing_list", "the SAS token lacks list (l) permission")
    return info


# --- local sources a caller names (embedded mode): confined to the configured roots -----------------

def private_paths(settings: Settings) -> list[Path]:
    """Folders a caller's local source never reaches: state, secrets, models, work, output, and more."""
    out = [settings.state_dir, settings.secrets_path.parent, settings.models_path]
    for url in (settings.work_location, settings.output_url):
        if url and (url.startswith("file://") or "://" not in url):
            out.append(Path(unquote(urlsplit(url).path)) if url.startswith("file://") else Path(url))
    out.extend(Path(p) for p in settings.private_dirs)
    return [p.expanduser().resolve() for p in out]


def confine_local(path: Path | None, settings: Settings) -> Path:
    """The resolved path (symlinks and '..' followed) when it lies under a configured root and
    neither inside nor around one of the service's private folders; else LocationError naming the rule."""
    if path is None or not path.is_absolute():
        raise LocationError("local_relative", f"local path {path} is relative: give an absolute path or a "
                            "file:// URL (paths are never resolved against the service's working folder)")
    real = path.resolve()
    roots = [Path(r).expanduser().resolve() for r in settings.local_roots]
    if not roots:
        raise LocationError("local_outside_roots", f"local path {path} is not under a configured root: "
                            "none is configured (MDBATCH_LOCAL_ROOTS)")
    if not any(real.is_relative_to(r) for r in roots):
        shown = f" (resolves to {real})" if real != path else ""
        raise LocationError("local_outside_roots", f"local path {path}{shown} is not under a configured root "
                            f"(MDBATCH_LOCAL_ROOTS: {os.pathsep.join(str(r) for r in roots)})")
    for private in private_paths(settings):
        if real.is_relative_to(private) or private.is_relative_to(real):
            raise LocationError("local_private", f"local path {path} is inside, or holds, a folder of the "
                                "service's own state (keys, secrets, work files), which is never read")
    return real


def check_caller_location(url: str, settings: Settings) -> Location:
    """parse_location for a URL a caller gave: a local one must also be absolute and confined."""
    loc = parse_location(url, settings)
    if loc.kind == "local":
        raw = url.strip()
        given = Path(unquote(urlsplit(raw).path)) if raw.startswith("file://") else Path(raw)
        if not given.is_absolute():
            raise LocationError("local_relative", f"local path {raw!r} is relative: give an absolute path "
                                "or a file:// URL (paths are never resolved against the service's working "
                                "folder)")
        confine_local(given, settings)
    return loc
