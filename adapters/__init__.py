"""The outside world behind small interfaces: storage, secrets, compute, settings, log redaction.

Imports only Azure SDKs, pydantic and the standard library; nothing else of ours.
"""
