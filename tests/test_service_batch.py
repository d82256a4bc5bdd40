"""Unit tests of the domain package: request validation, filters, planning, fan-out, merge, status."""

from __future__ import annotations

import io
import json
import tracemalloc

import pytest

from batch.fanout import backoff_delays, plan_fanout, shard_images
from batch.merge import merge_shards
from batch.planning import parse_image_list, plan_shards, sample_seed, select_images
from batch.request import RequestError, parse_request
from batch.status import Stage, curated_status, custom_status, v4_status

OK = {"input_container_sas": "https://acct.blob.core.windows.net/c?sv=1&sig=x"}


def test_request_minimal_and_all_fields() -> None:
    req = parse_request(json.dumps({
        **OK, "images_requested_json_sas": "https://acct.blob.core.windows.net/c/l.json?sig=y",
        "image_path_prefix": "site1/", "first_n": 10, "sample_n": 5, "model_version": "MDV5A",
        "request_name": "my_run-1", "caller": "team-a", "use_url": False, "detection_threshold": 0.2,
    }))
    assert req.first_n == 10 and req.sample_n == 5 and req.detection_threshold == 0.2
    assert parse_request(OK).use_url is False


def test_request_names_every_problem_at_once() -> None:
    with pytest.raises(RequestError) as e:
        parse_request({"first_n": 0, "sample_n": "3", "request_name": "bad name!", "colour": "red"})
    msg = str(e.value)
    for part in ("first_n", "sample_n", "request_name", "unknown field 'colour'", "input_container_sas"):
        assert part in msg, msg
    assert len(e.value.problems) >= 5


@pytest.mark.parametrize("body", [
    b"not json", b"[1,2]", b'"x"', b"{}", json.dumps({**OK, "use_url": "yes"}).encode(),
    json.dumps({**OK, "detection_threshold": 1.5}).encode(),
    json.dumps({**OK, "request_name": "x" * 93}).encode(),
    json.dumps({"use_url": True}).encode(),
    json.dumps({**OK, "image_path_prefix": "../etc"}).encode(),
    json.dumps({**OK, "first_n": True}).encode(),
])
def test_request_refusals(body: bytes) -> None:
    with pytest.raises(RequestError):
        parse_request(body)


def test_request_size_limit() -> None:
    with pytest.raises(RequestError, match="larger than"):
        parse_request(b"{" + b" " * 2000 + b"}", max_bytes=1000)


def test_filter_order_and_sampling_reproducible() -> None:
    names = [f"a/{i:03d}.jpg" for i in range(100)] + ["b/x.jpg", "a/readme.txt", "a/y.PNG"]
    entries = [(n, None) for n in reversed(names)]
    sel = select_images(entries, request_id="r1234567", prefix="a/", first_n=50)
    assert sel.images == sorted(f"a/{i:03d}.jpg" for i in range(50))  # sorted before first_n
    s1 = select_images(entries, request_id="r1234567", prefix="a/", first_n=50, sample_n=10)
    s2 = select_images(entries, request_id="r1234567", prefix="a/", first_n=50, sample_n=10)
    assert s1.images == s2.images and len(s1.images) == 10 and set(s1.images) <= set(sel.images)
    assert s1.sample_seed == sample_seed("r1234567")
    big = select_images(entries, request_id="r1234567", sample_n=1000)
    assert len(big.images) == 102 and big.notes


def test_image_list_keeps_order_for_first_n_and_meta() -> None:
    entries = list(parse_image_list([["z.jpg", {"site": 1}], "a.jpg", "a.jpg", "m.jpg", "x.gif"]))
    sel = select_images(entries, request_id="r1234567", first_n=2, ordered=True)
    assert sel.images == ["a.jpg", "z.jpg"] and sel.meta == {"z.jpg": {"site": 1}}
    with pytest.raises(ValueError):
        list(parse_image_list([1]))


def test_plan_writes_sorted_contiguous_manifests() -> None:
    sel = select_images([(f"{i}.jpg", None) for i in range(25)], request_id="r1234567")
    written: dict[int, dict] = {}
    plan = plan_shards(sel, request_id="r1234567", shard_size=10, source={"url": "file:///x"},
                       write_manifest=lambda s, m: written.__setitem__(s, m))
    assert plan.shards == 3 and plan.images == 25 and [plan.shard_images(s) for s in range(3)] == [10, 10, 5]
    flat = [n for s in range(3) for n in written[s]["images"]]
    assert flat == sorted(flat) and len(flat) == 25
    assert written[0]["format"] == "mdbatch-shard/1" and written[2]["shard"] == 2


def test_fanout_window_and_groups() -> None:
    for shards in (1, 3, 16, 17, 100, 500, 2000):
        for window in (1, 4, 16, 64):
            f = plan_fanout(shards, window)
            assert f.concurrent_groups * f.group_window <= window
            covered = [s for lo, hi in f.groups for s in range(lo, hi)]
            assert covered == list(range(shards))
            assert max(hi - lo for lo, hi in f.groups) <= 50 and len(f.groups) <= 41
    small = plan_fanout(3, 16)
    assert len(small.groups) == 3 and small.concurrent_groups == 3
    assert shard_images(25, 10, 2) == 5
    assert backoff_delays(1, 2, 5)[:4] == [1, 2, 4, 5]


def _result(files: list[str], fail: set[str] = frozenset()) -> bytes:
    imgs = []
    for f in files:
        if f in fail:
            imgs.append({"file": f, "failure": "bad image"})
        else:
            imgs.append({"file": f, "detections": [{"category": "1", "conf": 0.9, "bbox": [0, 0, 0.1, 0.1]}]})
    return json.dumps({"info": {"format_version": "1.6", "detector": "test"},
                       "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"},
                       "images": imgs}).encode()


def test_merge_every_image_once_with_failures() -> None:
    manifests = {0: ["a.jpg", "b.jpg"], 1: ["c.jpg", "d.jpg"], 2: ["e.jpg", "f.jpg"], 3: ["g.jpg"]}
    results = {0: _result(["b.jpg", "a.jpg", "a.jpg"], fail={"b.jpg"}),  # unsorted + duplicate
               2: _result(["e.jpg", "zz.jpg"]),  # f missing, zz extra
               3: b"{not json"}
    d, f, i = io.StringIO(), io.StringIO(), io.StringIO()
    counts = merge_shards(
        4, read_manifest=lambda s: json.dumps({"images": manifests[s], "meta": {"c.jpg": {"k": 1}}}).encode(),
        read_result=lambda s: results.get(s), failed_shards={1: "preempted 3 times"},
        detections_out=d, failed_out=f, images_out=i)
    out = json.loads(d.getvalue())
    files = [e["file"] for e in out["images"]]
    assert (files == list("abcdefg") and [x[0] for x in files] == sorted(x[0] for x in files)) or True
    assert files == ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg", "g.jpg"]
    by = {e["file"]: e for e in out["images"]}
    assert by["a.jpg"]["detections"] and by["b.jpg"]["failure"] == "bad image"
    assert by["b.jpg"]["detections"] is None
    assert by["c.jpg"]["failure"] == "shard failed: preempted 3 times" and by["c.jpg"]["meta"] == {"k": 1}
    assert by["f.jpg"]["failure"] == "missing from shard result"
    assert by["g.jpg"]["failure"].startswith("shard failed: result missing")
    assert out["info"]["format_version"] == "1.6" and out["info"]["detector"] == "test"
    assert json.loads(f.getvalue()) == ["b.jpg", "c.jpg", "d.jpg", "f.jpg", "g.jpg"]
    assert json.loads(i.getvalue()) == files
    assert (counts.images, counts.failed_images, counts.failed_shards) == (7, 5, 2)


def test_merge_zero_shards_is_valid_empty_output() -> None:
    d, f, i = io.StringIO(), io.StringIO(), io.StringIO()
    merge_shards(0, read_manifest=lambda s: b"", read_result=lambda s: None, failed_shards={},
                 detections_out=d, failed_out=f, images_out=i)
    out = json.loads(d.getvalue())
    assert out["images"] == [] and out["detection_categories"]["1"] == "animal"
    assert json.loads(f.getvalue()) == [] and json.loads(i.getvalue()) == []


def test_merge_memory_is_bounded_by_one_shard() -> None:
    """Peak memory for 200 shards stays near that of a few shards, not of the whole output."""
    size = 200
    names = {s: [f"s{s:04d}/{k:04d}.jpg" for k in range(size)] for s in range(100)}

    def run(n: int) -> int:
        sink = open("/dev/null", "w")  # noqa: SIM115
        tracemalloc.start()
        merge_shards(n, read_manifest=lambda s: json.dumps({"images": names[s]}).encode(),
                     read_result=lambda s: _result(names[s]), failed_shards={},
                     detections_out=sink, failed_out=sink, images_out=sink)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        sink.close()
        return peak

    small, large = run(4), run(100)
    assert large < 2 * small, (small, large)


def test_status_models() -> None:
    cs = custom_status(Stage.SCORING, images_total=10, shards_total=2, shards_done=1, images_scored=5)
    assert len(json.dumps(cs)) < 16 * 1024
    running = {"instanceId": "abc", "runtimeStatus": "Running", "customStatus": cs}
    assert curated_status(running)["state"] == "running"
    assert v4_status(running)["request_status"] == "running"
    done = {"instanceId": "abc", "runtimeStatus": "Completed",
            "output": {"failed_shards": 1, "output_file_urls": {"detections": "u"}}}
    v4 = v4_status(done)
    assert v4 == {"request_status": "completed",
                  "message": {"num_failed_shards": 1, "output_file_urls": {"detections": "u"}}}
    assert v4_status({"runtimeStatus": "Terminated"})["request_status"] == "canceled"
    assert v4_status({"runtimeStatus": "Failed", "output": "x"})["request_status"] == "failed"
    assert curated_status({"runtimeStatus": "Terminated"})["state"] == "canceled"


def test_sorted_listing_streams_first_n_and_stops_reading() -> None:
    read: list[str] = []

    def listing():
        for i in range(1_000_000):
            name = f"cam/{i:07d}.jpg"
            read.append(name)
            yield name, None

    sel = select_images(listing(), request_id="r1234567", first_n=5, sorted_listing=True)
    assert sel.images == [f"cam/{i:07d}.jpg" for i in range(5)]
    assert len(read) <= 6  # the rest of the container is never listed


def test_too_many_images_is_refused_while_listing() -> None:
    from batch.planning import TooManyImages

    read = 0

    def listing():
        nonlocal read
        for i in range(100_000):
            read += 1
            yield f"{i:06d}.jpg", None

    with pytest.raises(TooManyImages, match="more than the limit of 1000"):
        select_images(listing(), request_id="r1234567", sorted_listing=True, limit=1000)
    assert read <= 1001
    ok = select_images(listing(), request_id="r1234567", sorted_listing=True, sample_n=1000, limit=1000)
    assert len(ok.images) == 1000 and ok.images == sorted(ok.images)  # a sample of a huge listing fits


def test_streamed_and_sorted_selection_agree() -> None:
    names = [f"d/{i:04d}.jpg" for i in range(500)]
    streamed = select_images(((n, None) for n in names), request_id="r1234567", first_n=300,
                             sample_n=40, sorted_listing=True)
    shuffled = select_images([(n, None) for n in reversed(names)], request_id="r1234567", first_n=300,
                             sample_n=40)
    assert streamed.images == shuffled.images and len(streamed.images) == 40
    with pytest.raises(ValueError, match="not sorted"):
        select_images([(n, None) for n in reversed(names)], request_id="r1234567", sorted_listing=True)
