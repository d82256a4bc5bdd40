"""The detection request: the old service's field names, strict validation, one message per request.

Validation here is structural (types, ranges, names, which fields go together). Whether a URL may be
fetched (https, allowlisted host, SAS permissions and expiry) is checked by the caller of
`parse_request` with the storage adapter's rules, and the problems are reported together.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .classification import ADMIN1_RE, COUNTRY_RE

REQUEST_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,92}$")
CALLER_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")
MODEL_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class RequestError(ValueError):
    """An invalid request; `problems` lists each problem, `str()` joins them into one message."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid request: " + "; ".join(problems))


class DetectionRequest(BaseModel):
    """What a caller asks for. Field names follow the old v3/v4 service; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    input_container_sas: str | None = Field(default=None, max_length=4096)
    images_requested_json_sas: str | None = Field(default=None, max_length=4096)
    image_path_prefix: str | None = Field(default=None, max_length=1024)
    first_n: int | None = Field(default=None, gt=0)
    sample_n: int | None = Field(default=None, gt=0)
    model_version: str | None = None
    request_name: str | None = None
    caller: str | None = None
    use_url: bool = False
    detection_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    # --- issue 12: optional species classification (batch/classification.py) ---
    classifier_version: str | None = None
    country: str | None = None  # ISO 3166-1 alpha-3, for the geofence
    admin1_region: str | None = None  # e.g. a US state code, with country
    ensemble: bool = False  # SpeciesNet's ensemble (geofence, roll-up) on the classifications
    # --- end issue 12 ---

    @field_validator("detection_threshold", mode="before")
    @classmethod
    def _int_threshold(cls, v: Any) -> Any:
        # JSON has one number type: accept 0 and 1 as thresholds, never booleans.
        if isinstance(v, int) and not isinstance(v, bool):
            return float(v)
        return v

    @field_validator("request_name")
    @classmethod
    def _request_name(cls, v: str | None) -> str | None:
        if v is not None and not REQUEST_NAME_RE.match(v):
            raise ValueError("must be 1-92 characters of A-Z a-z 0-9 _ -")
        return v

    @field_validator("caller")
    @classmethod
    def _caller(cls, v: str | None) -> str | None:
        if v is not None and not CALLER_RE.match(v):
            raise ValueError("must be 1-128 characters of A-Z a-z 0-9 _ . @ -")
        return v

    @field_validator("model_version", "classifier_version")  # classifier_version: issue 12
    @classmethod
    def _model(cls, v: str | None) -> str | None:
        if v is not None and not MODEL_RE.match(v):
            raise ValueError("must be 1-64 characters of A-Z a-z 0-9 _ . -")
        return v

    @field_validator("country")  # issue 12
    @classmethod
    def _country(cls, v: str | None) -> str | None:
        if v is not None and not COUNTRY_RE.match(v.upper()):
            raise ValueError("must be an ISO 3166-1 alpha-3 country code, e.g. USA")
        return None if v is None else v.upper()

    @field_validator("admin1_region")  # issue 12
    @classmethod
    def _admin1(cls, v: str | None) -> str | None:
        if v is not None and not ADMIN1_RE.match(v.upper()):
            raise ValueError("must be 2 letters or digits, e.g. CA")
        return None if v is None else v.upper()

    @field_validator("image_path_prefix")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        if v is not None and (v.startswith("/") or "\\" in v or ".." in v.split("/")):
            raise ValueError("must be a relative path with forward slashes and no '..'")
        return v


def _loc(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ()))
    return loc or "request"


def parse_request(body: bytes | str | dict[str, Any], *, max_bytes: int = 1 << 20) -> DetectionRequest:
    """Parse and validate a request body; raise RequestError naming every problem at once."""
    if isinstance(body, (bytes, str)):
        if len(body) > max_bytes:
            raise RequestError([f"request body is larger than {max_bytes} bytes"])
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise RequestError([f"body is not valid JSON ({e.__class__.__name__})"]) from None
    else:
        data = body
    if not isinstance(data, dict):
        raise RequestError(["body must be a JSON object"])
    problems: list[str] = []
    try:
        req = DetectionRequest.model_validate(data)
    except ValidationError as e:
        for err in e.errors(include_url=False, include_input=False):
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown field '{_loc(err)}'")
            else:
                problems.append(f"{_loc(err)}: {err['msg']}")
        req = None
    # Cross-field rules: checked also when field errors exist, so one answer names everything.
    use_url = data.get("use_url") is True
    if not use_url and not data.get("input_container_sas"):
        problems.append("input_container_sas is required unless use_url is true")
    if use_url and not data.get("images_requested_json_sas"):
        problems.append("use_url needs images_requested_json_sas (a list of image URLs)")
    if use_url and data.get("input_container_sas"):
        problems.append("use_url and input_container_sas do not go together")
    if data.get("admin1_region") and not data.get("country"):  # issue 12
        problems.append("admin1_region needs country")
    if data.get("ensemble") is True and not data.get("classifier_version"):
        problems.append("ensemble needs classifier_version")
    if problems or req is None:
        raise RequestError(problems or ["invalid request"])
    return req


def redacted_url(url: str) -> str:
    """The URL without its query string (a SAS lives there): safe to log and to keep in history."""
    return url.split("?", 1)[0]


def sas_token(url: str) -> str | None:
    """The query string of a SAS URL (without '?'), or None when there is none."""
    if "?" not in url:
        return None
    token = url.split("?", 1)[1]
    return token or None
