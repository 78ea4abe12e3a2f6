"""The same App as a Ray Serve deployment, with replicas: each replica opens the bundle and runs its own
batcher, cache and metrics; Ray routes HTTP to them. ``max_ongoing_requests`` is at least the batch size (so
a replica can fill a batch) and ``max_queued_requests`` is finite (Ray's default queue is unbounded)."""
from __future__ import annotations

from pathlib import Path

from ..core.errors import UsageError


def import_ray_serve():
    try:
        from ray import serve
    except ImportError as exc:
        raise UsageError(f"--ray needs Ray Serve ({exc.name} is not installed): pip install 'edgekit[serve-ray]'"
                         ) from None
    return serve


def deployment(bundle: str | Path, *, replicas: int = 1, name: str = "edgekit", **app_options):
    """A bound Ray Serve application serving ``bundle`` (a one-shot bundle's App or an LM bundle's LmApp); run it
    with ``ray.serve.run(app)``."""
    from .lm_model import is_lm_bundle

    serve = import_ray_serve()
    bundle = str(Path(bundle).resolve())
    lm = is_lm_bundle(bundle)
    queue = app_options.setdefault("queue", 64 if lm else 256)
    if lm:  # every running sequence and every waiting one is an ongoing request of the replica
        ongoing = app_options.get("max_seqs", 8) + queue
    else:
        max_batch = app_options.setdefault("max_batch", 32)
        ongoing = 2 * max_batch

    def build_app():
        if lm:
            from .lm_app import LmApp

            return LmApp(bundle, **app_options)
        from .app import App

        return App(bundle, **app_options)

    @serve.deployment(name=name, num_replicas=replicas, max_ongoing_requests=ongoing,
                      max_queued_requests=queue, ray_actor_options={"num_cpus": 0})
    @serve.ingress(build_app)
    class EdgekitDeployment:
        pass

    return EdgekitDeployment.bind()


def run(bundle: str | Path, *, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1, **app_options):
    """Start a local Ray instance and serve ``bundle`` on it (blocks until interrupted)."""
    import time

    import ray

    serve = import_ray_serve()
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    serve.start(http_options={"host": host, "port": port})
    serve.run(deployment(bundle, replicas=replicas, **app_options), route_prefix="/")
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        serve.shutdown()
        ray.shutdown()
