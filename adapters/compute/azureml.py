"""Azure ML compute: one command job per shard attempt on a GPU cluster (azure-ai-ml).

- Job name = ShardJob.name, so a second submit finds the first job (get-before-create, and a
  conflict on create is answered by reading the existing job).
- Code: scoring/ staged into a writable temp folder and handed to `command(code=PATH)`; the SDK
  registers it as a code asset on first use and reuses it by content hash after (or a given code
  asset id, MDBATCH_AML_CODE=azureml:NAME:VERSION).
- Model: registered model asset NAME (label or version from settings) mounted read-only; the
  command reads `${{inputs.model}}/NAME.onnx` (the same NAME.onnx convention as MODEL_DIR locally).
- Manifest and result: datastore URIs when the URL lies in the configured datastore's container
  (result folder mounted read-write so checkpoints survive pre-emption), else the blob URLs go to
  the scorer as plain arguments and it reads/writes them with the cluster's managed identity.
- Nothing secret goes into the job: only the Key Vault URL and the identity's client id.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from ..settings import REPO_ROOT, Settings
from .base import JobState, JobStatus, ShardJob, scoring_args

log = logging.getLogger(__name__)

_QUEUED = {"NotStarted", "Starting", "Provisioning", "Preparing", "Queued"}
_RUNNING = {"Running", "Finalizing"}
# Compute - List Nodes: each node's `nodeState` (idle, running, preparing, unusable, leaving,
# preempted) and the `runId` it runs; a job whose node is `preempted` was pre-empted, not broken.
_NODE_PREEMPTED = "preempted"


def map_aml_status(status: Any, detail: str | None = None) -> JobStatus:
    """Map an AML job status onto our JobStatus (pre-emption is found from the nodes, see status())."""
    s = str(getattr(status, "value", status) or "Unknown")  # the SDK gives a (str, Enum)
    s = {v.lower(): v for v in (*_QUEUED, *_RUNNING, "CancelRequested", "Completed", "Failed", "Canceled",
                                "NotResponding", "Paused", "Unknown")}.get(s.lower(), s)
    if s in _QUEUED:
        return JobStatus(JobState.QUEUED, s)
    if s in _RUNNING:
        return JobStatus(JobState.RUNNING, s)
    if s == "Completed":
        return JobStatus(JobState.SUCCEEDED)
    if s == "Failed":
        return JobStatus(JobState.FAILED, detail or "the Azure ML job failed")
    if s in ("Canceled", "CancelRequested"):
        return JobStatus(JobState.CANCELLED, "cancel requested" if s == "CancelRequested" else None)
    if s == "NotResponding":
        # AML says the run stopped sending heartbeats; it may recover. Keep polling, say why.
        return JobStatus(JobState.RUNNING, "NotResponding: no heartbeat from the job")
    if s == "Paused":
        return JobStatus(JobState.QUEUED, "Paused")
    return JobStatus(JobState.QUEUED, f"{s}: state not reported yet")


def _node_field(node: Any, name: str, rest_name: str) -> str:
    """A field of the SDK's AmlComputeNodeInfo. azure-ai-ml 1.35.2 fills it from the REST model's
    as_dict(), which is keyed by the REST names (nodeState, runId): its own attributes stay None."""
    return str(getattr(node, name, None) or getattr(node, rest_name, None) or "")


def tree_hash(folder: Path) -> str:
    """sha256 over relative paths and contents (no caches), so the code asset version follows the code."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if "__pycache__" in rel or rel.endswith((".pyc", ".pyo")):
            continue
        h.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


class AzureMLComputeBackend:
    """ComputeBackend on Azure ML. Needs the AzureML Data Scientist role on the workspace."""

    def __init__(self, settings: Settings, ml_client: Any = None, *, credential: Any = None) -> None:
        self.settings = settings
        if ml_client is None:
            from azure.ai.ml import MLClient

            if credential is None:
                from azure.identity import DefaultAzureCredential

                credential = DefaultAzureCredential()
            ml_client = MLClient(credential, settings.aml_subscription_id, settings.aml_resource_group,
                                 settings.aml_workspace)
        self.ml = ml_client
        self._lock = threading.Lock()
        self._code_id: str | None = None
        self._models: dict[str, tuple[float, str]] = {}
        self.model_cache_s = 600.0

    # --- public API ----------------------------------------------------------
    def submit(self, job: ShardJob) -> str:
        name = job.name
        try:
            self.ml.jobs.get(name)
            return name  # already submitted (an activity that ran twice)
        except ResourceNotFoundError:
            pass
        try:
            self.ml.jobs.create_or_update(self.build_job(job))
        except (ResourceExistsError, HttpResponseError) as exc:
            if isinstance(exc, HttpResponseError) and exc.status_code not in (409, 400):
                raise
            self.ml.jobs.get(name)  # a concurrent submit won; anything else re-raises here
        log.info("submitted Azure ML job %s", name)
        return name

    def status(self, job_id: str) -> JobStatus:
        try:
            job = self.ml.jobs.get(job_id)
        except ResourceNotFoundError:
            return JobStatus(JobState.FAILED, f"no such job {job_id!r}")
        st = map_aml_status(getattr(job, "status", None), self._detail(job))
        if st.state in (JobState.FAILED, JobState.CANCELLED) and self._preempted(job_id):
            where = f"compute {self.settings.aml_compute}: node state 'preempted'"
            return JobStatus(JobState.PREEMPTED, f"the node running {job_id} was pre-empted ({where})")
        return st

    def _preempted(self, job_id: str) -> bool:
        """Did a node of the cluster stop running this job because it was pre-empted?

        Read from the documented node fields of Compute - List Nodes (`nodeState` == "preempted"
        and `runId` == the job), not from words in error text. Best effort: no answer = no.
        """
        try:
            nodes = list(self.ml.compute.list_nodes(self.settings.aml_compute))
        except (HttpResponseError, ResourceNotFoundError) as exc:
            log.warning("cannot list the nodes of %s to check for pre-emption: %s",
                        self.settings.aml_compute, exc)
            return False
        return any(_node_field(n, "run_id", "runId") == job_id
                   and _node_field(n, "node_state", "nodeState").lower() == _NODE_PREEMPTED for n in nodes)

    def cancel(self, job_id: str) -> None:
        try:
            self.ml.jobs.begin_cancel(job_id)
        except ResourceNotFoundError:
            return
        except HttpResponseError as exc:
            if exc.status_code in (400, 409):  # already terminal
                return
            raise

    # --- building the job ----------------------------------------------------
    def build_job(self, job: ShardJob) -> Any:
        """The azure-ai-ml command job for one shard attempt (no network except asset look-ups)."""
        from azure.ai.ml import Input, Output, command
        from azure.ai.ml.entities import ManagedIdentityConfiguration

        s = self.settings
        inputs: dict[str, Any] = {
            "model": Input(type="custom_model", path=self.model_ref(job.model), mode="ro_mount"),
        }
        if job.classifier:  # issue 12: a registered model asset named by the classifier version
            inputs["classifier"] = Input(type="custom_model", path=self.model_ref(job.classifier),
                                         mode="ro_mount")
        outputs: dict[str, Any] = {}
        manifest_uri = self.datastore_uri(job.manifest_url)
        if manifest_uri is not None or job.manifest_url.startswith("https://"):
            inputs["manifest"] = Input(type="uri_file", path=manifest_uri or job.manifest_url,
                                       mode="download")
            input_arg = "${{inputs.manifest}}"
        else:
            raise ValueError(f"Azure ML cannot read {job.manifest_url!r}: use a blob or datastore URL")
        out_uri = self.datastore_uri(job.output_url)
        if out_uri is not None:
            folder, _, base = out_uri.rpartition("/")
            outputs["result"] = Output(type="uri_folder", path=folder + "/", mode="rw_mount")
            output_arg = "${{outputs.result}}/" + base
        elif job.output_url.startswith("https://"):
            output_arg = job.output_url
        else:
            raise ValueError(f"Azure ML cannot write {job.output_url!r}: use a blob or datastore URL")
        args = scoring_args(job, model="${{inputs.model}}/" + f"{job.model}.onnx", input_=input_arg,
                            output=output_arg,
                            classifier=("${{inputs.classifier}}/" + f"{job.classifier}.onnx"
                                        if job.classifier else None))
        env: dict[str, str] = {}
        if s.aml_require_gpu:
            env["MDBATCH_REQUIRE_CUDA"] = "1"  # scoring/engine.py: no silent CPU fallback on a GPU node
        if s.key_vault_url:
            env["MDBATCH_KEY_VAULT_URL"] = s.key_vault_url
        if s.aml_identity_client_id:
            env["AZURE_CLIENT_ID"] = s.aml_identity_client_id
            env["DEFAULT_IDENTITY_CLIENT_ID"] = s.aml_identity_client_id
        return command(
            name=job.name,
            display_name=job.name,
            experiment_name=s.aml_experiment,
            command="python -m scoring " + " ".join(args),
            code=self.code_id(),
            environment=s.aml_environment.removeprefix("azureml:") if "@" in s.aml_environment
            else s.aml_environment,
            compute=s.aml_compute,
            inputs=inputs,
            outputs=outputs,
            environment_variables=env,
            identity=ManagedIdentityConfiguration(),
            tags={"mdbatch": "1", "request_id": job.request_id, "shard": str(job.shard),
                  "attempt": str(job.attempt), "model": job.model},
        )

    def datastore_uri(self, url: str) -> str | None:
        """`https://acct.blob.../container/a/b.json` -> `azureml://datastores/DS/paths/a/b.json`.

        Only for URLs inside the configured datastore's container; None otherwise.
        """
        s = self.settings
        if url.startswith("azureml://"):
            return url
        if not (s.aml_datastore and s.aml_datastore_url):
            return None
        base = s.aml_datastore_url.rstrip("/") + "/"
        clean = urlsplit(url)._replace(query="", fragment="").geturl()
        if not clean.startswith(base):
            return None
        rel = unquote(clean[len(base):])
        return f"azureml://datastores/{s.aml_datastore}/paths/{rel}"

    def model_ref(self, model: str) -> str:
        """`azureml:NAME:VERSION`, resolving a label (default `latest`) once per 10 minutes."""
        label = self.settings.aml_model_label
        if label.isdigit():
            return f"azureml:{model}:{label}"
        now = time.monotonic()
        hit = self._models.get(model)
        if hit is not None and now - hit[0] < self.model_cache_s:
            return hit[1]
        found = self.ml.models.get(name=model, label=label)
        ref = f"azureml:{model}:{found.version}"
        self._models[model] = (now, ref)
        return ref

    def code_id(self) -> str:
        """What the job's `code=` gets: a code asset's ARM id, or the staged snapshot of scoring/.

        A local folder is the SDK's documented way (`command(code=PATH)`): on each job create it
        lists the workspace's code versions by the folder's content hash and reuses a match, else
        it asks for an upload location, uploads the folder and registers an anonymous code version.
        So a fresh workspace, or a changed scoring/, gets its code asset on the first submit.
        """
        with self._lock:
            if self._code_id is not None:
                return self._code_id
            raw = self.settings.aml_code
            scope = (f"/subscriptions/{self.settings.aml_subscription_id}/resourceGroups/"
                     f"{self.settings.aml_resource_group}/providers/Microsoft.MachineLearningServices/"
                     f"workspaces/{self.settings.aml_workspace}")
            if raw and raw.startswith(("/subscriptions/", "azureml:/subscriptions/")):
                self._code_id = raw.removeprefix("azureml:")
            elif raw and raw.startswith("azureml:"):
                name, _, version = raw.removeprefix("azureml:").partition(":")
                if not version:
                    raise ValueError("MDBATCH_AML_CODE=azureml:NAME:VERSION needs a version")
                self._code_id = f"{scope}/codes/{name}/versions/{version}"
            else:
                self._code_id = str(self.stage_code(Path(raw) if raw else REPO_ROOT / "scoring"))
            return self._code_id

    def stage_code(self, scoring_dir: Path) -> Path:
        """Copy scoring/ to STAGING/mdbatch-code-<hash>/scoring (a writable temp folder), once per content.

        Never under the app folder (read-only when the app runs from a package) or the state folder.
        The folder holds only the package, so the uploaded snapshot is exactly what the job imports.
        """
        if not (scoring_dir / "__main__.py").is_file() and not (scoring_dir / "__init__.py").is_file():
            raise ValueError(f"{scoring_dir} is not the scoring package (MDBATCH_AML_CODE)")
        version = tree_hash(scoring_dir)[:16]
        root = self.settings.staging_path
        root.mkdir(parents=True, exist_ok=True)
        stage = root / f"mdbatch-code-{version}"
        if not (stage / "scoring").is_dir():
            tmp = Path(tempfile.mkdtemp(prefix=stage.name + ".", dir=root))
            shutil.copytree(scoring_dir, tmp / "scoring",
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.onnx", "*.pt"))
            try:
                tmp.rename(stage)
            except OSError:  # another submit staged it first
                shutil.rmtree(tmp, ignore_errors=True)
        return stage

    @staticmethod
    def _detail(job: Any) -> str | None:
        """Whatever the job entity says about why it ended (error text, properties)."""
        bits: list[str] = []
        for attr in ("error", "status_detail"):
            v = getattr(job, attr, None)
            if v:
                bits.append(str(v))
        props = getattr(job, "properties", None) or {}
        for k, v in props.items():
            kl = str(k).lower()
            if any(w in kl for w in ("error", "preempt", "failure", "reason")):
                bits.append(f"{k}: {v}")
        return "; ".join(bits)[:500] or None


__all__ = ["AzureMLComputeBackend", "map_aml_status", "tree_hash"]
