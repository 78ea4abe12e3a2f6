"""Serving a bundle: ``App`` (ASGI, KServe v2 protocol) with a dynamic batcher, a response cache,
backpressure and Prometheus metrics; ``LmApp`` serves an LM bundle (OpenAI-compatible API and KServe v2 generate,
continuous batching, a prefix cache); ``server.serve`` runs either under uvicorn, ``ray.deployment`` under Ray
Serve, and ``triton.write_repository`` writes a Triton model repository.
"""
from .app import App
from .lm_app import LmApp

__all__ = ["App", "LmApp"]
