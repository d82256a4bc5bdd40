"""Following a job to its end with a live progress bar (detect and wait share it)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from mdbatch.client import TERMINAL_STATES, ApiClient, progress_of, state_of


class RateColumn(ProgressColumn):
    """Images a second since scoring began. Progress arrives in steps (the service reads the
    shards' progress files on a timer that slows down on long jobs), so rich's windowed estimate
    would often read zero."""

    def render(self, task: Task) -> Text:
        rate = task.fields.get("rate")
        return Text(f"{rate:,.1f} img/s" if rate else "- img/s", style="cyan")


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def follow(client: ApiClient, request_id: str, console: Console, *, poll_s: float = 0.5,
           max_poll_s: float = 2.0, on_status: Callable[[dict[str, Any]], None] | None = None,
           ) -> dict[str, Any]:
    """Poll the curated status until the job ends; draw images scored of total, shards, rate, ETA."""
    columns = [
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[stage]:<11}"),
        BarColumn(bar_width=30),
        TextColumn("{task.completed:,.0f}/{task.fields[total_text]} images"),
        TextColumn("shards {task.fields[shards]}"),
        RateColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
    ]
    status: dict[str, Any] = {}
    interval = poll_s
    with Progress(*columns, console=console, transient=False, refresh_per_second=8) as bar:
        task = bar.add_task("job", total=None, stage="starting", total_text="?", shards="-/-", rate=None)
        last_done = -1
        first_seen: tuple[float, int] | None = None  # (time, images scored) when scoring was first seen
        while True:
            status = client.get(request_id) or {}
            if on_status:
                on_status(status)
            p = progress_of(status)
            state = state_of(status)
            total = _int(p.get("images_total"))
            scored = _int(p.get("images_scored")) or 0
            s_total = _int(p.get("shards_total"))
            s_done = _int(p.get("shards_done")) or 0
            s_failed = _int(p.get("shards_failed")) or 0
            shards = f"{s_done}/{s_total if s_total is not None else '?'}"
            if s_failed:
                shards += f" ({s_failed} failed)"
            stage = str(p.get("stage") or state)
            if state in TERMINAL_STATES:
                stage = state
                if state == "completed" and total is not None:
                    scored = total
            now = time.monotonic()
            if first_seen is None and (stage == "scoring" or scored):
                first_seen = (now, 0 if stage == "scoring" and not scored else scored)
            rate = None
            if first_seen is not None and now > first_seen[0] and scored > first_seen[1]:
                rate = (scored - first_seen[1]) / (now - first_seen[0])
            bar.update(task, completed=scored, total=total, stage=stage, rate=rate,
                       total_text=f"{total:,}" if total is not None else "?", shards=shards)
            if state in TERMINAL_STATES:
                break
            interval = poll_s if scored != last_done else min(max_poll_s, interval * 1.3)
            last_done = scored
            time.sleep(interval)
    return status
