"""How shards are grouped under sub-orchestrations and how the in-flight window is shared.

Pure arithmetic, kept here (not in the orchestrator) so it is unit-tested and the orchestrator stays
a short, readable sequence of durable calls.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FanoutPlan:
    """Groups of consecutive shards; `concurrent_groups` x `group_window` <= the request's window."""

    groups: list[tuple[int, int]]  # [start, stop) shard ranges
    concurrent_groups: int
    group_window: int


def plan_fanout(shards: int, window: int, max_group: int = 50, target_groups: int = 40) -> FanoutPlan:
    """Split `shards` into at most ~`target_groups` groups of at most `max_group` shards.

    Small requests get one shard per group (progress is reported per group); the window is split
    so that the shards in flight across all running groups never exceed `window`. At least two
    groups run at a time when possible, so a slow shard at the end of one group does not idle the
    whole window.
    """
    if shards <= 0:
        return FanoutPlan(groups=[], concurrent_groups=0, group_window=0)
    window = max(1, window)
    size = max(1, min(max_group, -(-shards // target_groups)))
    groups = [(s, min(s + size, shards)) for s in range(0, shards, size)]
    concurrent = min(len(groups), max(2, window // size), window)
    group_window = max(1, window // concurrent)
    return FanoutPlan(groups=groups, concurrent_groups=concurrent, group_window=group_window)


def shard_images(images: int, shard_size: int, shard: int) -> int:
    """Images in `shard` (every shard is full but maybe the last)."""
    return max(0, min(shard_size, images - shard * shard_size))


def backoff_delays(initial: float, factor: float, cap: float) -> list[float]:
    """First few poll delays (for docs and tests): initial, initial*factor, ... capped at `cap`."""
    out, d = [], initial
    for _ in range(8):
        out.append(min(d, cap))
        d = min(d * factor, cap)
    return out
