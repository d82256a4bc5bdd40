"""A shard job with a classifier on Azure ML: the classifier is a registered model asset mounted
like the detector, and the scorer's command line names it (real azure-ai-ml entities, ARM faked)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from adapters.compute.base import scoring_args
from tests.test_adapters_azureml import JOB, SCOPE, _backend

pytestmark = [
    pytest.mark.filterwarnings("ignore::marshmallow.warnings.RemovedInMarshmallow4Warning"),
    pytest.mark.filterwarnings("ignore::marshmallow.warnings.ChangedInMarshmallow4Warning"),
]


def test_azureml_job_mounts_the_classifier(tmp_path: Path) -> None:
    backend, _, adapter = _backend(tmp_path, aml_datastore="work",
                                     aml_datastore_url="https://acct.blob.core.windows.net/work")
    job = dataclasses.replace(JOB, classifier="speciesnet-crop", country="USA", admin1_region="CA")
    backend.submit(job)
    put = next(r for r in adapter.requests if r.method == "PUT")
    assert urlsplit(put.url).path == f"{SCOPE}/jobs/{job.name}"
    props = json.loads(put.body)["properties"]
    assert props["command"].endswith(
        "--batch-size 8 --classifier ${{inputs.classifier}}/speciesnet-crop.onnx --country USA "
        "--admin1-region CA")
    assert props["inputs"]["classifier"] == {"uri": f"{SCOPE}/models/speciesnet-crop/versions/2",
                                             "mode": "ReadOnlyMount", "jobInputType": "custom_model"}


def test_without_classifier_the_command_line_is_unchanged() -> None:
    args = scoring_args(JOB, model="m.onnx", input_="in.json", output="out.json")
    assert args == ["--model", "m.onnx", "--input", "in.json", "--output", "out.json", "--threshold",
                    "0.005", "--checkpoint-every", "200", "--batch-size", "8"]
    # country without a classifier path is not passed (nothing would use it)
    geo = dataclasses.replace(JOB, country="USA")
    assert scoring_args(geo, model="m.onnx", input_="in.json", output="out.json") == args
