"""Compute contracts (docs/contracts.md): one shard attempt = one job with a deterministic name."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ShardJob:
    """One attempt at scoring one shard. URLs never carry a SAS."""

    request_id: str
    shard: int
    attempt: int  # 1-based
    manifest_url: str  # file:///... or blob URL, no SAS
    output_url: str  # same
    model: str  # model version name, resolved by the backend
    threshold: float
    checkpoint_every: int = 500
    batch_size: int | None = None
    # issue 12: optional crop classifier (version name, resolved by the backend) and geofence
    classifier: str | None = None
    country: str | None = None
    admin1_region: str | None = None
    ensemble: bool = False

    @property
    def name(self) -> str:
        """Deterministic: submitting the same attempt twice names the same job."""
        return f"mdb-{self.request_id}-s{self.shard:05d}-a{self.attempt}"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PREEMPTED = "preempted"


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.PREEMPTED})


@dataclass(frozen=True)
class JobStatus:
    state: JobState
    reason: str | None = None

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES


@runtime_checkable
class ComputeBackend(Protocol):
    def submit(self, job: ShardJob) -> str: ...  # idempotent per job.name; returns job id
    def status(self, job_id: str) -> JobStatus: ...
    def cancel(self, job_id: str) -> None: ...  # idempotent


def scoring_args(job: ShardJob, *, model: str, input_: str, output: str,
                 classifier: str | None = None) -> list[str]:
    """The scorer's arguments after `python -m scoring` (same on every backend); `classifier` is
    the backend's path of `job.classifier`."""
    args = ["--model", model, "--input", input_, "--output", output,
            "--threshold", repr(float(job.threshold)), "--checkpoint-every", str(int(job.checkpoint_every))]
    if job.batch_size is not None:
        args += ["--batch-size", str(int(job.batch_size))]
    if classifier:  # issue 12; country/region are validated codes ([A-Z0-9]), safe on a command line
        args += ["--classifier", classifier]
        if job.country:
            args += ["--country", job.country]
        if job.admin1_region:
            args += ["--admin1-region", job.admin1_region]
        if job.ensemble:
            args += ["--ensemble"]
    return args
