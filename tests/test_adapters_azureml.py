"""Azure ML backend: the real MLClient over a transport that answers like ARM and records requests."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from adapters_fixtures import FakeCredential, Recorded, make_settings, recording_transport

with warnings.catch_warnings():  # azure-ai-ml's schema modules warn at import (marshmallow 4)
    warnings.simplefilter("ignore")
    from azure.ai.ml import MLClient

from adapters.compute import JobState, JobStatus, ShardJob
from adapters.compute.azureml import AzureMLComputeBackend, map_aml_status, tree_hash
from adapters.settings import REPO_ROOT

SUB = "00000000-1111-2222-3333-444444444444"
SCOPE = (f"/subscriptions/{SUB}/resourceGroups/rg-mdb/providers/Microsoft.MachineLearningServices"
         "/workspaces/ws-mdb")
ACCOUNT_KEY = "c2VjcmV0a2V5" * 8
# azure-ai-ml 1.35 uses marshmallow APIs that warn on every job (de)serialization: third-party noise.
pytestmark = [
    pytest.mark.filterwarnings("ignore::marshmallow.warnings.RemovedInMarshmallow4Warning"),
    pytest.mark.filterwarnings("ignore::marshmallow.warnings.ChangedInMarshmallow4Warning"),
]
AML_STATES = ["NotStarted", "Starting", "Provisioning", "Preparing", "Queued", "Running", "Finalizing",
              "CancelRequested", "Completed", "Failed", "Canceled", "NotResponding", "Paused", "Unknown"]


class FakeArm:
    """Enough of the Azure ML ARM API for jobs, environments, models, code versions and compute nodes.

    It says no like ARM does: an unknown job or code version is 404, a code-version list by hash is
    empty until a version with that hash was created, the cluster's node list is what the test put
    there. A code upload location (startPendingUpload) is a SAS URL of a real Azurite container, so
    the SDK's own upload runs for real.
    """

    def __init__(self, upload: tuple[str, str] | None = None) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.cancelled: list[str] = []
        self.conflict_on_put = False
        self.upload = upload  # (container URL, SAS query) for startPendingUpload
        self.codes: dict[str, dict[str, Any]] = {}  # ARM id -> code version resource
        self.code_puts: list[dict[str, Any]] = []
        self.pending_uploads: list[str] = []
        self.nodes: list[dict[str, Any]] | None = []  # None: listNodes answers 403

    def __call__(self, req: Recorded) -> tuple[int, dict[str, str], Any]:
        path = unquote(urlsplit(req.url).path)
        assert req.headers.get("Authorization") == "Bearer fake-token"
        assert path.startswith(SCOPE + "/"), path
        rest = path[len(SCOPE) + 1:].split("/")
        if rest[0] == "jobs":
            name = rest[1]
            if req.method == "GET":
                job = self.jobs.get(name)
                if job is None:
                    return 404, {}, {"error": {"code": "UserError", "message": f"job {name} not found"}}
                return 200, {}, job
            if req.method == "PUT":
                if self.conflict_on_put or name in self.jobs:
                    self.jobs.setdefault(name, self._job(name, json.loads(req.body)))
                    return 409, {}, {"error": {"code": "UserError", "message": "A job with this name exists"}}
                self.jobs[name] = self._job(name, json.loads(req.body))
                return 201, {}, self.jobs[name]
            if req.method == "POST" and rest[2] == "cancel":
                if name not in self.jobs:
                    return 404, {}, {"error": {"code": "UserError", "message": "not found"}}
                self.cancelled.append(name)
                self.jobs[name]["properties"]["status"] = "CancelRequested"
                return 200, {}, b""
        if rest[0] in ("environments", "models") and rest[2:] == ["versions"]:
            version = {"environments": "3", "models": "2"}[rest[0]]
            item: dict[str, Any] = {"id": f"{SCOPE}/{rest[0]}/{rest[1]}/versions/{version}", "name": version,
                                    "properties": {}}
            if rest[0] == "models":
                item["properties"] = {"flavors": {}, "modelType": "custom_model",
                                      "modelUri": f"azureml://datastores/models/paths/{rest[1]}/"}
            return 200, {}, {"value": [item]}
        if rest[0] == "codes":
            return self._codes(req, rest)
        if rest[0] == "computes" and rest[2:] == ["listNodes"] and req.method == "POST":
            if self.nodes is None:
                return 403, {}, {"error": {"code": "AuthorizationFailed", "message": "no listNodes"}}
            return 200, {}, {"nodes": self.nodes}
        return 400, {}, {"error": {"code": "BadRequest", "message": f"unexpected {req.method} {path}"}}

    def _codes(self, req: Recorded, rest: list[str]) -> tuple[int, dict[str, str], Any]:
        query = parse_qs(urlsplit(req.url).query)
        if req.method == "GET" and rest[2:] == ["versions"]:  # list, filtered by content hash
            wanted = query.get("hash", [None])[0]
            found = [c for c in self.codes.values()
                     if c["properties"]["properties"].get("hash_sha256") == wanted]
            return 200, {}, {"value": found}
        arm_id = f"{SCOPE}/codes/{rest[1]}/versions/{rest[3]}" if len(rest) >= 4 else ""
        if req.method == "GET" and len(rest) == 4:
            code = self.codes.get(arm_id)
            if code is None:
                return 404, {}, {"error": {"code": "UserError", "message": f"no code {rest[1]}:{rest[3]}"}}
            return 200, {}, code
        if req.method == "POST" and rest[4:] == ["startPendingUpload"]:
            if self.upload is None:
                return 403, {}, {"error": {"code": "AuthorizationFailed", "message": "no upload location"}}
            container, sas = self.upload
            blob = f"{container}/LocalUpload/{len(self.pending_uploads):04d}"
            self.pending_uploads.append(blob)
            return 200, {}, {"blobReferenceForConsumption": {
                "blobUri": blob, "credential": {"credentialType": "SAS", "sasUri": f"{blob}?{sas}"}},
                "pendingUploadId": str(len(self.pending_uploads)),
                "pendingUploadType": "TemporaryBlobReference"}
        if req.method == "PUT" and len(rest) == 4:
            body = json.loads(req.body)
            self.code_puts.append(body)
            self.codes[arm_id] = {"id": arm_id, "name": rest[3], "properties": body["properties"]}
            return 201, {}, self.codes[arm_id]
        return 400, {}, {"error": {"code": "BadRequest", "message": f"unexpected {req.method} codes/{rest}"}}

    @staticmethod
    def _job(name: str, body: dict[str, Any]) -> dict[str, Any]:
        job = json.loads(json.dumps(body))
        job.update(id=f"{SCOPE}/jobs/{name}", name=name,
                   type="Microsoft.MachineLearningServices/workspaces/jobs")
        job["properties"]["status"] = "NotStarted"
        return job


def _backend(tmp_path: Path, arm: FakeArm | None = None, **overrides: Any
             ) -> tuple[AzureMLComputeBackend, FakeArm, Any]:
    arm = arm or FakeArm()
    transport, adapter = recording_transport(arm)
    ml = MLClient(FakeCredential(), SUB, "rg-mdb", "ws-mdb", transport=transport, retry_total=0)
    conn = (f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={ACCOUNT_KEY};"
            "EndpointSuffix=core.windows.net")
    overrides.setdefault("aml_code", CODE_ID)  # the code-asset path has its own tests below
    settings = make_settings(
        tmp_path, compute_backend="azureml", aml_subscription_id=SUB, aml_resource_group="rg-mdb",
        aml_workspace="ws-mdb", aml_compute="gpu-t4", key_vault_url="https://mdb-kv.vault.azure.net",
        storage_connection_string=conn, aml_identity_client_id="cid-1234",
        staging_dir=tmp_path / "staging", **overrides,
    )
    return AzureMLComputeBackend(settings, ml_client=ml), arm, adapter


CODE_ID = f"{SCOPE}/codes/mdbatch-scoring/versions/7"
JOB = ShardJob(request_id="3f2a00000000", shard=12, attempt=2,
               manifest_url="https://acct.blob.core.windows.net/work/3f2a00000000/shards/00012.json",
               output_url="https://acct.blob.core.windows.net/work/3f2a00000000/results/00012.json",
               model="MDV5A", threshold=0.005, checkpoint_every=200, batch_size=8)


def test_submit_builds_the_job_request(tmp_path: Path) -> None:
    backend, _, adapter = _backend(tmp_path, aml_datastore="work",
                                     aml_datastore_url="https://acct.blob.core.windows.net/work")
    assert backend.submit(JOB) == JOB.name == "mdb-3f2a00000000-s00012-a2"
    puts = [r for r in adapter.requests if r.method == "PUT"]
    assert len(puts) == 1 and urlsplit(puts[0].url).path == f"{SCOPE}/jobs/{JOB.name}"
    props = json.loads(puts[0].body)["properties"]
    assert props["jobType"] == "Command"
    assert props["command"] == (
        "python -m scoring --model ${{inputs.model}}/MDV5A.onnx --input ${{inputs.manifest}} "
        "--output ${{outputs.result}}/00012.json --threshold 0.005 --checkpoint-every 200 --batch-size 8")
    assert props["computeId"] == f"{SCOPE}/computes/gpu-t4"
    assert props["environmentId"] == f"{SCOPE}/environments/mdbatch-onnx-gpu/versions/3"
    assert props["codeId"] == CODE_ID
    assert props["inputs"]["model"] == {"uri": f"{SCOPE}/models/MDV5A/versions/2", "mode": "ReadOnlyMount",
                                        "jobInputType": "custom_model"}
    assert props["inputs"]["manifest"] == {
        "uri": "azureml://datastores/work/paths/3f2a00000000/shards/00012.json", "mode": "Download",
        "jobInputType": "uri_file"}
    assert props["outputs"]["result"] == {
        "uri": "azureml://datastores/work/paths/3f2a00000000/results/", "mode": "ReadWriteMount",
        "jobOutputType": "uri_folder"}
    assert props["tags"] == {"mdbatch": "1", "request_id": "3f2a00000000", "shard": "12", "attempt": "2",
                             "model": "MDV5A"}
    assert props["identity"] == {"identityType": "Managed"}
    assert props["environmentVariables"] == {
        "MDBATCH_REQUIRE_CUDA": "1",
        "MDBATCH_KEY_VAULT_URL": "https://mdb-kv.vault.azure.net",
        "AZURE_CLIENT_ID": "cid-1234", "DEFAULT_IDENTITY_CLIENT_ID": "cid-1234"}
    assert props["experimentName"] == "mdbatch"
    _assert_no_secret(adapter.requests)


def test_submit_without_datastore_passes_blob_urls(tmp_path: Path) -> None:
    backend, _, adapter = _backend(tmp_path)
    backend.submit(JOB)
    props = json.loads(next(r for r in adapter.requests if r.method == "PUT").body)["properties"]
    assert props["inputs"]["manifest"]["uri"] == JOB.manifest_url
    assert f"--output {JOB.output_url} " in props["command"]
    assert "outputs" not in props or not props["outputs"]
    _assert_no_secret(adapter.requests)


def test_submit_is_idempotent(tmp_path: Path) -> None:
    backend, arm, adapter = _backend(tmp_path)
    assert backend.submit(JOB) == backend.submit(JOB)
    assert len([r for r in adapter.requests if r.method == "PUT"]) == 1
    # a concurrent submit that won between our GET and PUT: the conflict resolves to the same job
    other = ShardJob(**{**JOB.__dict__, "attempt": 3})
    arm.conflict_on_put = True
    assert backend.submit(other) == other.name
    assert other.name in arm.jobs


@pytest.mark.parametrize("aml_state", AML_STATES)
def test_status_for_every_aml_state(tmp_path: Path, aml_state: str) -> None:
    backend, arm, _ = _backend(tmp_path)
    backend.submit(JOB)
    arm.jobs[JOB.name]["properties"]["status"] = aml_state
    expected = {
        "NotStarted": JobState.QUEUED, "Starting": JobState.QUEUED, "Provisioning": JobState.QUEUED,
        "Preparing": JobState.QUEUED, "Queued": JobState.QUEUED, "Running": JobState.RUNNING,
        "Finalizing": JobState.RUNNING, "CancelRequested": JobState.CANCELLED,
        "Completed": JobState.SUCCEEDED,
        "Failed": JobState.FAILED, "Canceled": JobState.CANCELLED, "NotResponding": JobState.RUNNING,
        "Paused": JobState.QUEUED, "Unknown": JobState.QUEUED,
    }[aml_state]
    assert backend.status(JOB.name).state == expected


def test_preemption_is_read_from_the_node_state(tmp_path: Path) -> None:
    """A node in state `preempted` running this job = PREEMPTED; words in error text decide nothing."""
    backend, arm, adapter = _backend(tmp_path)
    backend.submit(JOB)
    job = arm.jobs[JOB.name]["properties"]
    job["status"] = "Failed"
    job["properties"] = {"azureml.failureReason": "The low priority node was preempted"}
    arm.nodes = [{"nodeId": "tvm-1", "nodeState": "running", "runId": "someone-else"}]
    assert backend.status(JOB.name) == JobStatus(
        JobState.FAILED, "azureml.failureReason: The low priority node was preempted")
    list_calls = [r for r in adapter.requests if r.url.split("?")[0].endswith("/computes/gpu-t4/listNodes")]
    assert list_calls and all(r.method == "POST" for r in list_calls)
    arm.nodes.append({"nodeId": "tvm-2", "nodeState": "preempted", "runId": JOB.name})
    st = backend.status(JOB.name)
    assert st.state == JobState.PREEMPTED and "node state 'preempted'" in (st.reason or "")
    job["status"] = "Canceled"  # AML cancels a job whose whole low-priority cluster went away
    assert backend.status(JOB.name).state == JobState.PREEMPTED
    job["status"] = "Completed"  # a finished job is finished, whatever the nodes say
    assert backend.status(JOB.name).state == JobState.SUCCEEDED
    job["status"] = "Failed"
    arm.nodes = None  # listNodes refused (403): no answer is no pre-emption
    assert backend.status(JOB.name).state == JobState.FAILED
    assert backend.status("mdb-nope0000-s00001-a1").state == JobState.FAILED
    assert map_aml_status("failed", "node Preempted").state == JobState.FAILED  # text is not a signal
    assert map_aml_status("SomethingNew").state == JobState.QUEUED


def _upload_container(azurite: Any) -> tuple[str, str, Any]:
    """A real Azurite container and a write SAS for it: where the stand-in ARM tells the SDK to upload."""
    from datetime import UTC, datetime, timedelta

    from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    name = "code" + str(abs(hash(str(datetime.now(UTC)))))[:12]
    service.create_container(name)
    sas = generate_container_sas(azurite.account_name, name, account_key=azurite.account_key,
                                 permission=ContainerSasPermissions(read=True, write=True, list=True,
                                                                    create=True, add=True),
                                 expiry=datetime.now(UTC) + timedelta(hours=1))
    return f"{azurite.blob_endpoint}/{name}", sas, service.get_container_client(name)


def test_first_submit_on_a_fresh_workspace_registers_the_code(tmp_path: Path, azurite: Any) -> None:
    """No code asset yet: the SDK lists by hash (none), gets an upload location, uploads, creates it."""
    container_url, sas, container = _upload_container(azurite)
    arm = FakeArm(upload=(container_url, sas))
    backend, _, adapter = _backend(tmp_path, arm, aml_code=None)
    backend.submit(JOB)
    code_hash = None
    calls = [(r.method, unquote(urlsplit(r.url).path)[len(SCOPE):]) for r in adapter.requests]
    code_calls = [c for c in calls if c[1].startswith("/codes/")]
    assert [m for m, _ in code_calls] == ["GET", "POST", "PUT"], calls
    assert code_calls[1][1].endswith("/startPendingUpload")
    listing = next(r for r in adapter.requests if r.method == "GET" and "/codes/" in r.url)
    code_hash = parse_qs(urlsplit(listing.url).query)["hash"][0]
    # the create request: the uploaded folder, anonymous, named by the content hash the SDK computed
    (body,) = arm.code_puts
    stage = tmp_path / "staging" / f"mdbatch-code-{tree_hash(REPO_ROOT / 'scoring')[:16]}"
    assert body["properties"]["codeUri"] == f"{arm.pending_uploads[0]}/{stage.name}"
    assert body["properties"]["isAnonymous"] is True
    assert body["properties"]["properties"]["hash_sha256"] == code_hash
    (code_id,) = arm.codes
    job_put = next(r for r in adapter.requests if r.method == "PUT" and "/jobs/" in r.url)
    assert json.loads(job_put.body)["properties"]["codeId"] == code_id
    # what reached storage is the scoring package and nothing else
    blobs = sorted(b.name for b in container.list_blobs())
    prefix = urlsplit(arm.pending_uploads[0]).path.split("/", 3)[3] + f"/{stage.name}/"
    assert blobs and all(b.startswith(prefix + "scoring/") for b in blobs)
    assert prefix + "scoring/__main__.py" in blobs and prefix + "scoring/engine.py" in blobs
    assert not any("__pycache__" in b or b.endswith(".pyc") for b in blobs)
    main = container.download_blob(prefix + "scoring/__main__.py").readall()
    assert main == (REPO_ROOT / "scoring" / "__main__.py").read_bytes()
    # staged in the writable staging folder, never under the state folder or the app folder
    assert (stage / "scoring" / "__main__.py").is_file()
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").rglob("*.py"))
    # a second backend (another function instance) finds the code by its hash: no second upload
    other, _, adapter2 = _backend(tmp_path, arm, aml_code=None)
    second = ShardJob(**{**JOB.__dict__, "attempt": 3})
    other.submit(second)
    assert len(arm.pending_uploads) == 1 and len(arm.code_puts) == 1
    put2 = next(r for r in adapter2.requests if r.method == "PUT" and "/jobs/" in r.url)
    assert json.loads(put2.body)["properties"]["codeId"] == code_id
    _assert_no_secret(adapter.requests)


def test_a_refused_code_upload_fails_the_submit(tmp_path: Path) -> None:
    """ARM says no to the upload location (403): the submit raises and no job is created."""
    from azure.core.exceptions import HttpResponseError

    backend, arm, adapter = _backend(tmp_path, FakeArm(upload=None), aml_code=None)
    with pytest.raises(HttpResponseError):
        backend.submit(JOB)
    assert arm.jobs == {} and arm.code_puts == []
    assert not any(r.method == "PUT" and "/jobs/" in r.url for r in adapter.requests)


def test_code_is_staged_in_a_writable_temp_folder(tmp_path: Path) -> None:
    backend, _, _ = _backend(tmp_path, aml_code=None)
    stage = backend.stage_code(REPO_ROOT / "scoring")
    assert stage.parent == tmp_path / "staging"
    assert backend.stage_code(REPO_ROOT / "scoring") == stage  # once per content
    assert sorted(p.name for p in stage.iterdir()) == ["scoring"]
    with pytest.raises(ValueError, match="not the scoring package"):
        backend.stage_code(tmp_path)


def test_cancel(tmp_path: Path) -> None:
    backend, arm, _ = _backend(tmp_path)
    backend.submit(JOB)
    backend.cancel(JOB.name)
    assert arm.cancelled == [JOB.name]
    assert backend.status(JOB.name).state == JobState.CANCELLED
    backend.cancel("mdb-nope0000-s00001-a1")  # idempotent, no error


def _assert_no_secret(requests: list[Recorded]) -> None:
    blob = "\n".join(r.url + "\n" + r.body.decode("utf-8", "replace") for r in requests)
    assert ACCOUNT_KEY not in blob and "AccountKey" not in blob
    assert not re.search(r"sig=", blob) and "fake-token" not in blob
