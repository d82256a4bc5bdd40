"""Who the caller is, and which models a request may name: rules at the door."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.settings import Settings
from triggers.service import ServiceError, identify, supported_models, validate

FORGED = {"x-ms-client-principal-name": "alice@example.org"}


def test_principal_headers_are_ignored_without_app_service_auth() -> None:
    s = Settings.from_env({})
    assert identify(FORGED, None, s) == "anonymous"
    assert identify(FORGED, "bob", s) == "bob"


def test_principal_headers_name_the_caller_behind_app_service_auth() -> None:
    s = Settings.from_env({"WEBSITE_AUTH_ENABLED": "True"})
    assert s.app_service_auth is True
    assert identify(FORGED, "bob", s) == "aad:alice@example.org"
    assert identify({}, "bob", s) == "bob"


def test_forged_header_does_not_pass_the_caller_allowlist() -> None:
    s = Settings.from_env({"MDBATCH_CALLERS": "bob"})
    with pytest.raises(ServiceError) as e:
        identify(FORGED, None, s)
    assert e.value.status == 401


def _models(tmp_path: Path, *names: str) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    for n in names:
        (d / f"{n}.onnx").write_bytes(b"x")
    return d


def test_local_compute_offers_only_installed_models(tmp_path: Path) -> None:
    d = _models(tmp_path, "test-rects")
    s = Settings.from_env({"MDBATCH_MODEL_DIR": str(d), "MDBATCH_DEFAULT_MODEL": "MDV5A"})
    assert supported_models(s) == ["test-rects"]
    s = Settings.from_env({"MDBATCH_MODEL_DIR": str(d), "MDBATCH_MODELS": "test-rects,MDV5B"})
    assert supported_models(s) == ["test-rects"]


def test_azureml_offers_configured_models_and_the_default(tmp_path: Path) -> None:
    env = {"MDBATCH_COMPUTE_BACKEND": "azureml", "MDBATCH_AML_SUBSCRIPTION_ID": "sub",
           "MDBATCH_AML_RESOURCE_GROUP": "rg", "MDBATCH_AML_WORKSPACE": "ws", "MDBATCH_AML_COMPUTE": "gpu",
           "MDBATCH_MODELS": "MDV5B", "MDBATCH_MODEL_DIR": str(tmp_path / "none")}
    assert supported_models(Settings.from_env(env)) == ["MDV5B", "MDV5A"]


def test_request_without_model_is_refused_when_the_default_is_not_installed(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    d = _models(tmp_path, "test-rects")
    s = Settings.from_env({"MDBATCH_MODEL_DIR": str(d), "MDBATCH_ALLOW_LOCAL_STORAGE": "true",
                           "MDBATCH_LOCAL_ROOTS": str(tmp_path)})
    with pytest.raises(ServiceError) as e:
        validate(f'{{"input_container_sas": "{photos}"}}'.encode(), s)
    assert e.value.status == 400 and "default model 'MDV5A' is not installed" in e.value.message
    assert validate(f'{{"input_container_sas": "{photos}", "model_version": "test-rects"}}'.encode(), s)
