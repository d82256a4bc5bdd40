"""Orchestrator functions: deterministic, no I/O, no clock, no randomness, no secrets.

They call activities by name and pass only small values (paths, counts, job ids).
"""
