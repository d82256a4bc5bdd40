"""The request's classification fields (batch/request.py, issue 12)."""

from __future__ import annotations

import pytest

from batch.classification import classify_args
from batch.request import RequestError, parse_request

BASE = {"input_container_sas": "https://acct.blob.core.windows.net/c?sv=1&sp=rl&sig=x"}


def test_classifier_fields_parse_and_normalise() -> None:
    req = parse_request({**BASE, "classifier_version": "speciesnet-4.0.1a", "country": "usa",
                         "admin1_region": "ca"})
    assert (req.classifier_version, req.country, req.admin1_region) == ("speciesnet-4.0.1a", "USA", "CA")


def test_a_v4_client_sending_country_alone_is_accepted() -> None:
    req = parse_request({**BASE, "country": "KEN"})
    assert req.country == "KEN" and req.classifier_version is None


@pytest.mark.parametrize(("extra", "problem"), [
    ({"classifier_version": "bad name!"}, "classifier_version: Value error, must be 1-64 characters"),
    ({"classifier_version": 3}, "classifier_version: Input should be a valid string"),
    ({"country": "Kenya"}, "country: Value error, must be an ISO 3166-1 alpha-3 country code"),
    ({"country": "USA", "admin1_region": "Calif"}, "admin1_region: Value error, must be 2 letters"),
    ({"classifier_version": "c", "ensemble": "yes"}, "ensemble: Input should be a valid boolean"),
    ({"ensemble": True}, "ensemble needs classifier_version"),
    ({"admin1_region": "CA"}, "admin1_region needs country"),
])
def test_bad_classification_fields_are_named(extra: dict, problem: str) -> None:
    with pytest.raises(RequestError) as e:
        parse_request({**BASE, **extra})
    assert any(p.startswith(problem) for p in e.value.problems), e.value.problems


def test_classify_args_only_what_is_set() -> None:
    assert classify_args({"request_id": "x", "model": "m"}) == {}
    assert classify_args({"classifier": "c", "country": None, "admin1_region": None}) == {"classifier": "c"}
    assert classify_args({"classifier": "c", "country": "USA", "admin1_region": "CA"}) == {
        "classifier": "c", "country": "USA", "admin1_region": "CA"}
