"""The image list, checked at the door where that is cheap (issue 14, item 6).

Before anything starts, one ranged read of the list's head: it must exist, be readable, be a JSON
array, and its first entries must be paths or [path, metadata] pairs. A 512 MB list is not read
whole here: when the head is only part of it, the entries in the head are checked and the rest is
left to `plan`, as before. Problems come back as strings for the door's 400 answer.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

from adapters.errors import AdapterError, LocationError, NotFoundError
from adapters.secrets import split_sas
from adapters.settings import Settings
from adapters.storage import LocalStore, check_caller_location, open_store

HEAD_BYTES = 256 * 1024
FIRST_ENTRIES = 1000
FIELD = "images_requested_json_sas"


def _entry_problem(i: int, entry: Any) -> str | None:
    if isinstance(entry, str):
        return None
    if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str):
        return None
    return f"{FIELD}: image list entry {i} is neither a path nor a [path, metadata] pair"


def _kind(value: Any) -> str:
    return {dict: "a JSON object", str: "a JSON string", bool: "a JSON boolean",
            type(None): "JSON null"}.get(type(value), "a JSON number")


def head_problem(head: bytes, complete: bool, entries: int = FIRST_ENTRIES) -> str | None:
    """What is wrong with a list whose first bytes are `head` (all of it when `complete`), or None."""
    try:
        text = head.decode("utf-8-sig") if complete else head.decode("utf-8-sig", errors="ignore")
    except UnicodeDecodeError:
        return f"{FIELD}: the image list is not UTF-8 text (a JSON array is expected)"
    if complete:
        try:
            data = json.loads(text)
        except ValueError:
            return f"{FIELD}: the image list is not valid JSON"
        if not isinstance(data, list):
            return f"{FIELD}: the image list is {_kind(data)}, not a JSON array of paths"
        for i, entry in enumerate(data[:entries]):
            if (p := _entry_problem(i, entry)) is not None:
                return p
        return None
    # Only the head: walk the array element by element until the head runs out.
    dec = json.JSONDecoder()
    pos = len(text) - len(text.lstrip())
    if pos >= len(text):
        return None  # whitespace only so far: plan decides
    first = text[pos]
    if first == "{":
        return f"{FIELD}: the image list is a JSON object, not a JSON array of paths"
    if first != "[":
        return f"{FIELD}: the image list is not a JSON array (it starts with {first!r})"
    pos += 1
    for i in range(entries):
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text) or (i == 0 and text[pos] == "]"):
            return None
        try:
            entry, pos = dec.raw_decode(text, pos)
        except ValueError:
            return None  # possibly an entry cut by the end of the head: plan reads it whole
        if (p := _entry_problem(i, entry)) is not None:
            return p
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return None
        if text[pos] != ",":
            return f"{FIELD}: the image list is not valid JSON (after entry {i})"
        pos += 1
    return None


def _read_head(url: str, s: Settings, secrets: Any) -> tuple[bytes, bool]:
    loc = check_caller_location(url, s)
    if loc.kind == "local":
        assert loc.path is not None
        return LocalStore(loc.path.parent).read_head(loc.path.name, HEAD_BYTES)
    clean, sas = split_sas(url)
    parent, _, name = clean.rstrip("/").rpartition("/")
    store = open_store(parent, s, sas=sas, secrets=secrets)
    return store.read_head(unquote(name), HEAD_BYTES)


def list_problems(url: str | None, s: Settings, secrets: Any = None) -> list[str]:
    """[] when the list looks right (or there is none); else one problem naming what is wrong."""
    if not url:
        return []
    try:
        head, complete = _read_head(url, s, secrets)
    except NotFoundError:
        return [f"{FIELD}: the image list does not exist"]
    except LocationError as exc:
        return [f"{FIELD}: {exc}"]
    except (PermissionError, IsADirectoryError):
        return [f"{FIELD}: the image list is not readable (permission denied or not a file)"]
    except ClientAuthenticationError:
        return [f"{FIELD}: storage refused to read the image list (check the SAS)"]
    except HttpResponseError as exc:
        if exc.status_code == 404:
            return [f"{FIELD}: the image list does not exist"]
        if exc.status_code == 403:
            return [f"{FIELD}: storage refused to read the image list (check the SAS: read permission)"]
        return [f"{FIELD}: the image list could not be read (storage answered {exc.status_code})"]
    except (OSError, AdapterError) as exc:
        return [f"{FIELD}: the image list could not be read ({exc.__class__.__name__})"]
    problem = head_problem(head, complete)
    return [problem] if problem else []
