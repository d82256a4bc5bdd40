"""Names of the three published result files, as the v4 service named them.

v4 (CameraTraps api/batch_processing, orchestrator_api and its README) published
`{id}/{id}_detections_{request_name}_{YYYYmmddHHMMSS}.json`, `{id}/{id}_failed_images_{...}.json` and
`{id}/{id}_images.json`, the timestamp being the UTC submission time. Its workflow
(manage_api_submission) derives local file names from these and checks that the request name is in
them, so every task of a batch lands in its own file.
"""

from __future__ import annotations

from datetime import UTC, datetime

OUTPUT_KINDS = ("detections", "failed_images", "images")


def submission_stamp(submitted: str | None) -> str:
    """`2026-12-03T11:42:50+00:00` -> `20261203114250` (v4's `%Y%m%d%H%M%S`, UTC)."""
    if not submitted:
        return "00000000000000"
    when = datetime.fromisoformat(submitted)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y%m%d%H%M%S")


def output_names(request_id: str, request_name: str | None, submitted: str | None) -> dict[str, str]:
    """Store names (relative to the output location) of the three files of one request."""
    stamp = submission_stamp(submitted)
    name = request_name or ""
    return {
        "detections": f"{request_id}/{request_id}_detections_{name}_{stamp}.json",
        "failed_images": f"{request_id}/{request_id}_failed_images_{name}_{stamp}.json",
        "images": f"{request_id}/{request_id}_images.json",
    }
