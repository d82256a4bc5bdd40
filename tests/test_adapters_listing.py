"""Listing 100,000 blobs is streamed page by page: one page in memory, not the whole container."""

# ruff: noqa: F811  (fixtures imported from adapters_fixtures are test arguments)
from __future__ import annotations

import tracemalloc
from pathlib import Path

from adapters_fixtures import AZURITE_KEY, BigContainer, big_container, make_settings  # noqa: F401

from adapters.storage import BlobStore, parse_location


def _counting_store(big: BigContainer, tmp_path: Path, pages: list[int], seen: list[int]) -> BlobStore:
    """A store whose list requests are recorded with how many names the caller had consumed then."""
    settings = make_settings(tmp_path, storage_connection_string=big.connection_string)
    loc = parse_location(f"{big.blob_endpoint}/{big.container}", settings)

    def hook(response: object) -> None:
        if "comp=list" in response.http_request.url:  # type: ignore[attr-defined]
            pages.append(seen[0])

    return BlobStore(loc, account_key=AZURITE_KEY, raw_response_hook=hook)


def test_list_100k_streamed(big_container: BigContainer, tmp_path: Path) -> None:
    pages: list[int] = []
    seen = [0]
    store = _counting_store(big_container, tmp_path, pages, seen)
    current: list[int] = []
    last = ""
    for name in store.list():
        assert name > last  # service order, nothing repeated
        last = name
        seen[0] += 1
        if seen[0] == 20_000:  # trace a 40,000-name stretch (tracing all of it doubles the run time)
            tracemalloc.start()
        elif seen[0] % 5000 == 2500 and 20_000 < seen[0] < 60_000:
            current.append(tracemalloc.get_traced_memory()[0])
        elif seen[0] == 60_000:
            tracemalloc.stop()
    assert seen[0] == big_container.names == 100_000
    # Page k is asked for only after the caller consumed page k-1: one page in memory at a time.
    assert pages == list(range(0, 100_000, 5000))
    # Memory held while iterating does not grow with the names already seen (40k names ~ 3.5 MB).
    assert len(current) == 8 and max(current) - min(current) < 1024 * 1024, current


def test_list_100k_filter_and_limit(big_container: BigContainer, tmp_path: Path) -> None:
    pages: list[int] = []
    store = _counting_store(big_container, tmp_path, pages, [0])
    got = list(store.list(prefix="site3/", extensions=[".JPG"], limit=1234))
    assert len(got) == 1234 and all(n.startswith("site3/") and n.lower().endswith(".jpg") for n in got)
    assert len(pages) == 1  # the limit stops the listing early
    n_txt = sum(1 for _ in store.list(prefix="site5/", extensions=["txt"]))
    assert n_txt == sum(1 for i in range(100_000) if i % 10 == 5 and i % 4 == 3)
