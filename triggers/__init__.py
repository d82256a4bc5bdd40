"""The doors: HTTP routes (new API and the v4-compatible one), the blob-upload trigger, request
parsing, caller identity and HTTP error mapping. The orchestration never sees a secret: the doors
park the caller's SAS and pass only its reference.
"""
