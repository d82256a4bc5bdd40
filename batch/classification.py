"""The optional classification part of a request (issue 12): which fields travel with a job.

Kept apart from the request schema so the orchestrations, activities and compute adapters pass
the same fields along without each listing them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: job / shard argument keys, in the order they appear on the scorer's command line
CLASSIFY_KEYS = ("classifier", "country", "admin1_region", "ensemble")
#: ISO 3166-1 alpha-3 (what SpeciesNet's geofence is keyed by), e.g. "USA", "KEN"
COUNTRY_RE = re.compile(r"^[A-Z]{3}$")
#: a first-level region code within the country (SpeciesNet: US state codes such as "CA")
ADMIN1_RE = re.compile(r"^[A-Z0-9]{2}$")  # speciesnet's geofence accepts two characters


def classify_args(job: Mapping[str, Any]) -> dict[str, Any]:
    """The classification keys a job has set (none for a job without a classifier, so a job
    started before this field existed replays with the same arguments)."""
    return {k: job[k] for k in CLASSIFY_KEYS if job.get(k)}
