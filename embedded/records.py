"""The engine's in-memory records: a cached instance, an activity job and its completion, and
what one episode produces before it is committed."""

from __future__ import annotations

from dataclasses import dataclass, field

from .store import InstanceRow


class EngineError(Exception):
    """A request the engine refuses; carries the HTTP status the API should answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class InstanceState:
    """In-memory cache of one running instance: stored row, host model, played history.

    `model` is the host's bookkeeping (next task id, action count, open tasks, waits, early
    events); it is stored with the instance row and replaced only by a committed episode.
    """

    row: InstanceRow
    model: dict
    parts: list[str]  # stored history events (JSON, IsPlayed true), in order
    last_end: float = 0.0
    last_duration: float = 0.0


@dataclass
class ActivityJob:
    row_id: int
    instance_id: str
    execution_id: str
    task_id: int
    name: str
    input: str | None


@dataclass
class Completion:
    job: ActivityJob
    ok: bool
    result: str | None = None
    reason: str | None = None
    details: str | None = None


@dataclass
class Episode:
    """What one episode produces, committed in one transaction."""

    events: list[dict] = field(default_factory=list)
    activities: list[tuple] = field(default_factory=list)  # (task_id, name, input)
    timers: list[tuple] = field(default_factory=list)  # (timer_id, fire_at str)
    cancel_timers: list[int] = field(default_factory=list)
    children: list[dict] = field(default_factory=list)
    messages: list[tuple[str, dict]] = field(default_factory=list)


def new_model() -> dict:
    return {"next_id": 0, "n_actions": 0, "open": {}, "waiting": {}, "buffer": []}
