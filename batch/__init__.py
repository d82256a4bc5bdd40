"""The domain: request schema and validation, image filtering, shard planning, streaming merge,
status model. Plain Python (pydantic + stdlib); imports nothing else of ours and no Azure SDK, so
it is tested without any server and reused by the triggers, the activities and the benchmarks.
"""
