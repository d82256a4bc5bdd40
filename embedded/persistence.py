"""What the engine writes, as SQL inside one transaction each: an episode, a termination, a new
instance, activity completions and fired timers.

Every function takes an open connection from `Store.tx()`; a rollback undoes all of it, so the
engine's in-memory caches may change only after the transaction commits.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from .protocol import EXECUTION_TERMINATED, make_event
from .records import Completion, Episode, InstanceState, new_model
from .store import TERMINAL, put_message


def delete_instance(db: sqlite3.Connection, iid: str) -> None:
    for table in ("instances", "history", "inbox", "timers", "activities"):
        db.execute(f"DELETE FROM {table} WHERE instance_id=?", (iid,))


def consume(db: sqlite3.Connection, ids: list[int]) -> None:
    db.executemany("DELETE FROM inbox WHERE id=?", [(i,) for i in ids])


def insert_instance(
    db: sqlite3.Connection,
    iid: str,
    name: str,
    input_json: str | None,
    now_s: str,
    execution_id: str,
    parent: tuple[str, int, str] | None = None,
) -> None:
    """A new Pending instance with its start message (parent: instance, task id, execution)."""
    p_iid, p_task, p_exe = parent if parent else (None, None, None)
    db.execute(
        "INSERT INTO instances VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            iid,
            name,
            "Pending",
            input_json,
            None,
            None,
            now_s,
            now_s,
            p_iid,
            p_task,
            p_exe,
            execution_id,
            json.dumps(new_model()),
        ),
    )
    put_message(db, iid, {"t": "start"})


def create_child(db: sqlite3.Connection, st: InstanceState, ch: dict, now_s: str, execution_id: str) -> bool:
    """A sub-orchestration instance; False (and a failure to the parent) if that id is running."""
    existing = db.execute("SELECT status FROM instances WHERE instance_id=?", (ch["iid"],)).fetchone()
    if existing is not None:
        if existing[0] not in TERMINAL:
            put_message(
                db,
                st.row.instance_id,
                {
                    "t": "sub",
                    "x": st.row.execution_id,
                    "id": ch["task_id"],
                    "ok": False,
                    "reason": f"An orchestration instance with ID '{ch['iid']}' is already running.",
                    "details": "",
                },
            )
            return False
        delete_instance(db, ch["iid"])
    insert_instance(
        db,
        ch["iid"],
        ch["name"],
        ch.get("input"),
        now_s,
        execution_id,
        parent=(st.row.instance_id, ch["task_id"], st.row.execution_id),
    )
    return True


def write_continue_as_new(
    db: sqlite3.Connection,
    iid: str,
    can_input: str | None,
    custom_json: str | None,
    now_s: str,
    new_exec: str,
    model: dict,
) -> None:
    db.execute("DELETE FROM history WHERE instance_id=?", (iid,))
    db.execute("DELETE FROM timers WHERE instance_id=?", (iid,))
    db.execute(
        "UPDATE instances SET status='Running', input=?, output=NULL, custom_status=?, "
        "last_updated_time=?, execution_id=?, model=? WHERE instance_id=?",
        (can_input, custom_json, now_s, new_exec, json.dumps(model), iid),
    )
    put_message(db, iid, {"t": "start"})


def write_history(db: sqlite3.Connection, iid: str, base: int, new_parts: list[str]) -> None:
    db.executemany(
        "INSERT INTO history(instance_id, seq, event) VALUES (?,?,?)",
        [(iid, base + k, p) for k, p in enumerate(new_parts)],
    )


def write_scheduled(
    db: sqlite3.Connection, st: InstanceState, ep: Episode
) -> list[tuple[int, int, str, str]]:
    """Activity rows, new timers and cancelled timers of an episode; returns the activity jobs."""
    iid, exe = st.row.instance_id, st.row.execution_id
    jobs: list[tuple[int, int, str, str]] = []
    for tid, name, inp in ep.activities:
        c = db.execute(
            "INSERT INTO activities(instance_id, execution_id, task_id, name, input) VALUES (?,?,?,?,?)",
            (iid, exe, tid, name, inp),
        )
        jobs.append((c.lastrowid, tid, name, inp))
    db.executemany(
        "INSERT INTO timers(instance_id, execution_id, timer_id, fire_at) VALUES (?,?,?,?)",
        [(iid, exe, tid, fa) for tid, fa in ep.timers],
    )
    db.executemany(
        "DELETE FROM timers WHERE instance_id=? AND execution_id=? AND timer_id=?",
        [(iid, exe, tid) for tid in ep.cancel_timers],
    )
    return jobs


def write_outcome(
    db: sqlite3.Connection,
    st: InstanceState,
    *,
    status: str,
    output: str | None,
    custom_json: str | None,
    now_s: str,
    model: dict,
    done: bool,
    error: str | None,
) -> None:
    """The instance row after an episode; on the end of a sub-orchestration, its result to the parent."""
    row = st.row
    iid = row.instance_id
    if done:
        db.execute("DELETE FROM timers WHERE instance_id=?", (iid,))
        db.execute("DELETE FROM activities WHERE instance_id=?", (iid,))
    if model["buffer"] and any(model["waiting"].get(n, 0) > 0 for n, _ in model["buffer"]):
        put_message(db, iid, {"t": "tick"})
    db.execute(
        "UPDATE instances SET status=?, output=COALESCE(?, output), custom_status=?, "
        "last_updated_time=?, model=? WHERE instance_id=?",
        (
            status,
            output,
            custom_json if custom_json is not None else row.custom_status,
            now_s,
            json.dumps(model),
            iid,
        ),
    )
    if done and row.parent_instance_id:
        msg: dict[str, Any] = {
            "t": "sub",
            "x": row.parent_execution_id,
            "id": row.parent_task_id,
            "ok": status == "Completed",
        }
        if status == "Completed":
            msg["r"] = output
        else:
            msg["reason"] = f"Orchestrator function '{row.name}' failed: {error}"
            msg["details"] = ""
        put_message(db, row.parent_instance_id, msg)


def write_terminate(
    db: sqlite3.Connection, st: InstanceState, reason: str, consumed: list[int], now_s: str
) -> None:
    """Terminated: history event, no timers or activities left, children and parent told."""
    row = st.row
    iid = row.instance_id
    ev = json.dumps(make_event(EXECUTION_TERMINATED, now_s, Input=json.dumps(reason), IsPlayed=True))
    consume(db, consumed)
    db.execute("INSERT INTO history(instance_id, seq, event) VALUES (?,?,?)", (iid, len(st.parts), ev))
    db.execute("DELETE FROM timers WHERE instance_id=?", (iid,))
    db.execute("DELETE FROM activities WHERE instance_id=?", (iid,))
    db.execute(
        "UPDATE instances SET status='Terminated', output=?, last_updated_time=? WHERE instance_id=?",
        (json.dumps(reason), now_s, iid),
    )
    for entry in st.model["open"].values():
        target = (
            entry.get("iid")
            if entry.get("k") == "sub"
            else (entry["of"].get("iid") if entry.get("k") == "rtimer" else None)
        )
        if target:
            put_message(db, target, {"t": "terminate", "reason": reason})
    if row.parent_instance_id:
        put_message(
            db,
            row.parent_instance_id,
            {
                "t": "sub",
                "x": row.parent_execution_id,
                "id": row.parent_task_id,
                "ok": False,
                "reason": f"Orchestration '{iid}' was terminated: {reason}",
                "details": "",
            },
        )


def write_completions(db: sqlite3.Connection, comps: list[Completion]) -> None:
    """Activity rows done; their results queued to their instances (dead work just dropped)."""
    db.executemany("DELETE FROM activities WHERE id=?", [(c.job.row_id,) for c in comps])
    for c in comps:
        if c.reason == "__dead__":
            continue
        put_message(
            db,
            c.job.instance_id,
            {
                "t": "done",
                "x": c.job.execution_id,
                "id": c.job.task_id,
                "ok": c.ok,
                "r": c.result,
                "reason": c.reason,
                "details": c.details,
            },
        )


def fire_timers(db: sqlite3.Connection, due: list[tuple]) -> None:
    """Due timers become timer messages to their instances."""
    for tid, iid, exe, timer_id, fire_at in due:
        db.execute("DELETE FROM timers WHERE id=?", (tid,))
        put_message(db, iid, {"t": "timer", "x": exe, "id": timer_id, "fire_at": fire_at})
