"""The SARM reward gateway: gRPC front end, engine (backends, micro-batching, embedding caches) and settings.

Depends on the `sarm` core; the core never imports it.
"""
