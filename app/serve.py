"""The service on Ray Serve: the same FastAPI app, replicated over the nodes of a Ray cluster.

    python -m app --engine ray-serve [--address auto] [--host 0.0.0.0] [--port 8000]   # or python -m app.serve
    serve run app.serve:application serve_num_replicas=2     # Serve's own CLI; a KubeRay RayService's import_path

Each replica runs the app ``app.main.create_app`` builds for uvicorn, behind Serve's FastAPI ingress
(``@serve.deployment`` + ``@serve.ingress``): the same routes, answers, errors and OpenAPI document,
and the same lifespan, so a replica loads the same recommender and runs the same coordination as a
uvicorn process. Batching: the project's micro-batcher, inside each replica, groups the requests
that replica has in hand (``FASHION_SERVE_MAX_ONGOING_REQUESTS``) into one forward, exactly as it
does under uvicorn, or, with ``FASHION_SERVE_BATCHING=serve``, Serve's own ``@serve.batch`` does
(``ServeBatcher``); Serve's router balances requests between replicas.

Bundle swaps reach every replica through the coordination the uvicorn service already has: with
``FASHION_REDIS_URL``, the Redis announcement channel (at once) and the bundle pointer poll
(``FASHION_BUNDLE_POLL_S``, the safety net); without Redis, each replica's poll of the bundle
store's pointer on disk. Replicas already share the bundle store (the path they all mount), and the
admin jobs, their states and the response cache need one shared place: so more than one replica
needs Redis, as several uvicorn processes do. A request takes its replica's live bundle once and
keeps it to the end (``Recommender.recommend``): a swap never mixes two bundles in one answer.

A replica that dies holding requests (its process killed, its node lost): Serve's proxy would answer
them 500 and not send them elsewhere. So, by default (``FASHION_SERVE_RELAY``), the application's
HTTP entry is a thin ingress, ``FashionIngress`` (no model, no CPU reserved), that hands each request
whole to a replica over a Serve handle (app.relay) and, when that replica dies before answering,
sends a request that is safe to repeat (a read, ``POST /recommend``) to another replica and answers
any other 503 with ``Retry-After``. The cost is one more hop per request inside the cluster
(measured in bench/ray_serve.py); with ``FASHION_SERVE_RELAY=false`` the proxy calls the replicas'
FastAPI ingress directly.

Settings are read once, here (from FASHION_* and ``.env``), and handed to every replica whole, with
paths made absolute: a replica's working directory and environment are its Ray worker's, not this
shell's. Every node must read the checkpoint, the bundle store and the catalogue at those paths.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import ray
from fastapi import FastAPI, Request, Response
from ray import serve
from ray.exceptions import NodeDiedError, OutOfMemoryError, RayActorError, WorkerCrashedError
from ray.serve import Application
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle

from app.batching import BatchOptions, BatchThread, Overloaded
from app.errors import error_response
from app.main import create_app
from app.relay import ASGIApp, Relayed, ReplicaLost, Reply, body_limit, relay_http, run_asgi
from app.settings import Settings, get_settings

log = logging.getLogger("app.serve")
In = TypeVar("In")
Out = TypeVar("Out")

APP_NAME = "fashion"
DEPLOYMENT = "FashionService"
INGRESS = "FashionIngress"
# The relaying ingress holds every request on its way to a replica; the replicas' own limits
# (max_ongoing_requests, max_queued_requests) are what bound them, not this.
INGRESS_MAX_ONGOING = 4096
# What awaiting a replica raises when it died holding the request: its actor dead or unreachable
# (RayActorError: ActorDiedError, ActorUnavailableError), killed for memory, its worker or node lost.
REPLICA_DEATHS = (RayActorError, OutOfMemoryError, WorkerCrashedError, NodeDiedError)
REPLICA_HEADER = "X-Serve-Replica"  # which replica answered: Serve's replica id (serve status lists them)


class ServeSettingsError(ValueError):
    """The settings cannot run on Serve as they are."""


class ServeBatcher(BatchThread[In, Out]):
    """The micro-batcher's place in a replica taken by Ray Serve's own ``@serve.batch``
    (FASHION_SERVE_BATCHING=serve): the same batch function, in one dedicated thread as there, up to
    FASHION_MAX_BATCH items, a batch waiting FASHION_MAX_WAIT_MS to fill; Serve runs one batch at a
    time and queues the rest. FASHION_QUEUE_LIMIT bounds the items waiting (Overloaded: 503). An item
    the batch function answers with an exception fails its own request alone."""

    def __init__(
        self,
        run_batch: Callable[[list[In]], Sequence[Out | Exception]],
        options: BatchOptions,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(run_batch, options, on_batch)
        self.limit = options.queue_limit + options.max_batch  # waiting, and the batch in the forward
        self._unanswered = 0  # submitted, not yet answered
        self._waiting = 0  # submitted, not yet handed to the batch function

        @serve.batch(max_batch_size=options.max_batch, batch_wait_timeout_s=options.max_wait_s)
        async def batched(items: list[In]) -> list[Out | Exception]:
            self._waiting -= len(items)
            if self.on_batch:
                self.on_batch(len(items))
            return list(await self.run(items))

        self._batched = batched

    @property
    def depth(self) -> int:
        return max(0, self._waiting)

    def start(self) -> None:
        """Serve starts its batching loop with the first item."""

    async def submit(self, item: In) -> Out:
        if self._unanswered >= self.limit:
            raise Overloaded("too many photos waiting for the model")
        self._unanswered += 1
        self._waiting += 1
        try:
            result: Out | Exception = await self._batched(item)
        finally:
            self._unanswered -= 1
        if isinstance(result, Exception):
            raise result
        return result


@serve.deployment(name=DEPLOYMENT, graceful_shutdown_timeout_s=30, health_check_period_s=10)
@serve.ingress()
class FashionService:
    """One replica: the uvicorn service's app, built in the replica (its model and bundle load in the
    app's lifespan, which Serve runs before the replica takes requests)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = Settings(**settings)

    def __serve_build_asgi_app__(self) -> FastAPI:
        app = create_app(self.settings)
        if self.settings.serve_batching == "serve":
            app.state.make_batcher = ServeBatcher
        replica = serve.get_replica_context().replica_id.unique_id

        @app.middleware("http")
        async def name_the_replica(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
            response = await call_next(request)
            response.headers[REPLICA_HEADER] = replica
            return response

        self.asgi: ASGIApp = app  # the app Serve runs (and its lifespan); relayed requests go through it too
        return app

    async def relayed(self, request: Relayed) -> Reply:
        """A request the relaying ingress hands over, answered by this replica's app."""
        return await run_asgi(self.asgi, request)


@serve.deployment(name=INGRESS, graceful_shutdown_timeout_s=30, ray_actor_options={"num_cpus": 0})
class FashionIngress:
    """The HTTP entry with ``FASHION_SERVE_RELAY``: each request relayed to a FashionService replica,
    sent again to another one when its replica dies (app.relay)."""

    def __init__(self, service: DeploymentHandle, max_upload_bytes: int) -> None:
        self.service, self.limit = service, body_limit(max_upload_bytes)
        self.replica = serve.get_replica_context().replica_id.unique_id

    async def send(self, request: Relayed) -> Reply:
        try:
            reply: Reply = await self.service.relayed.remote(request)
        except REPLICA_DEATHS as exc:
            raise ReplicaLost(type(exc).__name__) from exc
        return reply

    async def __call__(self, request: Request) -> Response:
        response = await self.answer(request)
        if REPLICA_HEADER.lower().encode() not in dict(response.raw_headers):
            response.headers[REPLICA_HEADER] = self.replica  # an answer of the ingress's own (413, 503)
        return response

    async def answer(self, request: Request) -> Response:
        try:
            return await relay_http(request, self.limit, self.send)
        except BackPressureError as exc:  # the replicas' queue (FASHION_SERVE_MAX_QUEUED_REQUESTS) is full
            retry_after = str(max(1, round(exc.retry_after_s or 1)))
            return error_response(exc.status_code, "overloaded", exc.message, {"Retry-After": retry_after})
        except DeploymentUnavailableError as exc:  # the service failed to deploy
            return error_response(503, "not_ready", exc.message, {"Retry-After": "5"})


def replica_settings(settings: Settings) -> dict[str, Any]:
    """Every field of ``settings``, paths absolute, as the replicas' constructor argument."""

    def absolute(value: Any) -> Any:
        if isinstance(value, Path):
            return value.absolute()
        if isinstance(value, list):
            return [absolute(v) for v in value]
        return value

    return {name: absolute(getattr(settings, name)) for name in Settings.model_fields}


def most_replicas(settings: Settings) -> int:
    return settings.serve_autoscaling_max or settings.serve_num_replicas


def deployment_options(settings: Settings) -> dict[str, Any]:
    """Serve's options for the deployment: replicas (fixed or autoscaled), requests per replica, and
    the resources each replica reserves (one GPU each where FASHION_SERVE_NUM_GPUS=1)."""
    options: dict[str, Any] = {
        "max_ongoing_requests": settings.serve_max_ongoing_requests,
        "max_queued_requests": settings.serve_max_queued_requests,
        "ray_actor_options": {"num_cpus": settings.serve_num_cpus, "num_gpus": settings.serve_num_gpus},
    }
    if settings.serve_autoscaling_max is not None:
        low = settings.serve_autoscaling_min
        options["autoscaling_config"] = {
            "min_replicas": 1 if low is None else low,
            "max_replicas": settings.serve_autoscaling_max,
            "target_ongoing_requests": settings.serve_target_ongoing_requests,
        }
    else:
        options["num_replicas"] = settings.serve_num_replicas
    return options


def check(settings: Settings) -> None:
    """Refuse what cannot serve as the uvicorn service does (ServeSettingsError says why)."""
    if most_replicas(settings) > 1 and not settings.redis_url:
        raise ServeSettingsError(
            "more than one replica needs FASHION_REDIS_URL: admin jobs, their states and the response cache "
            "must be shared by the replicas (bundle swaps alone would reach them through the bundle pointer)"
        )


def build(settings: Settings) -> Application:
    """The Serve application of the service under ``settings``."""
    check(settings)
    if settings.serve_num_gpus > 0 and not settings.device.startswith("cuda"):
        log.warning("FASHION_SERVE_NUM_GPUS with FASHION_DEVICE=%s: each replica's GPU is idle", settings.device)
    options = deployment_options(settings)
    service = FashionService.options(**options).bind(replica_settings(settings))  # type: ignore[attr-defined]
    if not settings.serve_relay:
        return service
    # As many ingress replicas as service replicas (one per node where they spread), reserving nothing.
    count = {k: v for k, v in options.items() if k in ("num_replicas", "autoscaling_config")}
    ingress = FashionIngress.options(max_ongoing_requests=INGRESS_MAX_ONGOING, **count)  # type: ignore[attr-defined]
    return ingress.bind(service, settings.max_upload_bytes)


def application(args: dict[str, str] | None = None) -> Application:
    """Serve's application builder (``serve run app.serve:application``, ``serve deploy``, a KubeRay
    RayService's ``import_path``): settings from this process's environment, ``args`` (setting names,
    e.g. ``serve_num_replicas=2``) on top."""
    return build(Settings(**args) if args else get_settings())  # type: ignore[arg-type]


def deploy(settings: Settings, name: str = APP_NAME) -> None:
    """Deploy (or update in place) the application on the Ray cluster this process is connected to,
    at the route ``/``; returns once every replica is up (its model and bundle loaded)."""
    serve.run(build(settings), name=name, route_prefix="/", blocking=False)


def http_targets(name: str = APP_NAME) -> list[str]:
    """Where the application's HTTP requests enter, from Serve's controller (its target groups: what
    a load balancer in front is pointed at): Serve's proxies; or, where the cluster's nodes were
    started with Serve's direct ingress (``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``, bench/ray_serve.py),
    each ingress replica's own port, there being no proxy. Empty where the controller cannot say."""
    try:
        from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

        controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        groups: list[Any] = ray.get(
            controller.get_target_groups.remote(name), timeout=30
        )  # ray.serve.schema.TargetGroup
    except Exception as exc:  # a private interface of Serve's: the service runs without it
        log.warning("Serve's controller did not say where requests enter (%s)", exc)
        return []
    return [f"http://{t.ip}:{t.port}" for g in groups if g.protocol == "HTTP" for t in g.targets]


def run(
    settings: Settings,
    address: str | None,
    host: str,
    port: int,
    proxy_location: str = "EveryNode",
    detach: bool = False,
) -> None:
    """Connect to the cluster at ``address`` (else FASHION_RAY_ADDRESS, else RAY_ADDRESS, else start
    a local one), start Serve's HTTP proxies on ``host:port`` and deploy. Then wait for SIGTERM or
    Ctrl-C, and delete the application (a local Ray stops with this process); ``detach`` leaves it
    running on the cluster and returns."""
    try:
        check(settings)
    except ServeSettingsError as exc:
        raise SystemExit(str(exc)) from None
    address = address or settings.ray_address or os.environ.get("RAY_ADDRESS")
    if detach and not address:
        raise SystemExit("--detach leaves the application on a running cluster: give its --address")
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)  # a container's PID 1 would otherwise ignore SIGTERM
    signal.signal(signal.SIGINT, _stop)
    ray.init(address=address, logging_level=logging.WARNING)
    try:
        # Serve's HTTP options hold from its first start on a cluster; a running Serve keeps its own.
        serve.start(proxy_location=proxy_location, http_options={"host": host, "port": port})
        deploy(settings)
        log.info(
            "serving %s with Ray Serve at http://%s:%d (%s); requests enter at %s (Serve's target groups)",
            APP_NAME,
            host,
            port,
            describe(settings),
            ", ".join(http_targets()) or "?",
        )
        if detach:
            return
        stop.wait()
        log.info("stopping: deleting the application %s", APP_NAME)
        serve.delete(APP_NAME)
    finally:
        ray.shutdown()


def describe(settings: Settings) -> str:
    options = deployment_options(settings)
    scale = options.get("autoscaling_config") or f"{options['num_replicas']} replica(s)"
    return f"{scale}, {options['ray_actor_options']} each"


def main(argv: list[str] | None = None) -> None:
    """``python -m app.serve ...``: ``python -m app --engine ray-serve ...``."""
    from app.__main__ import main as serve_main

    serve_main(["--engine", "ray-serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
