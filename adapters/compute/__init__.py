"""Compute backends: Azure ML command jobs and local scorer processes behind `ComputeBackend`."""

from __future__ import annotations

from .base import TERMINAL_STATES, ComputeBackend, JobState, JobStatus, ShardJob, scoring_args

__all__ = ["TERMINAL_STATES", "ComputeBackend", "JobState", "JobStatus", "ShardJob", "scoring_args"]
