"""Serving a bundle: ``App`` (ASGI, KServe v2 protocol) with a dynamic batcher, a response cache,
backpressure and Prometheus metrics; ``server.serve`` runs it under uvicorn, ``ray.deployment`` under Ray
Serve, and ``triton.write_repository`` writes a Triton model repository.
"""
from .app import App

__all__ = ["App"]
