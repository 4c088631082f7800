"""Serve the API: ``python -m app`` (settings from FASHION_* environment variables).

``--bootstrap`` first runs ``python -m app.bootstrap``'s indexing, as ``make serve`` does: when no
bundle of the model is live, a first slice of the catalogue (FASHION_FIRST_SLICE items) is indexed
before the API starts, and the API then has a job add the rest and swaps to it without a restart.
The compose stack's API starts this way, so a first start indexes its catalogue by itself.

``--engine ray-serve`` serves the same app as Ray Serve replicas on a Ray cluster (``app.serve``;
``--address``, or a local Ray); uvicorn is the default.
"""

from __future__ import annotations

import argparse
import logging
import signal
from types import FrameType

import uvicorn

from app.main import create_app
from app.settings import get_settings
from model.progress import configure_logging

log = logging.getLogger("app")


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # a container's PID 1 would otherwise ignore SIGTERM


def bootstrap() -> None:
    """The first slice, when none is live; a failure is logged and the API starts anyway (503 until
    a bundle is published, e.g. by POST /admin/reindex), rather than restarting over and over."""
    from app import bootstrap as first_start

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        first_start.main([])
    except Exception:
        log.exception("indexing the catalogue at start failed: the API starts without a new bundle")
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the recommendation API with uvicorn (or Ray Serve)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--bootstrap",
        action="store_true",
        help="first index a first slice of the catalogue when no bundle of the model is live (app.bootstrap)",
    )
    parser.add_argument(
        "--engine",
        choices=("uvicorn", "ray-serve"),
        default="uvicorn",
        help="ray-serve: the same app as replicas on a Ray cluster (app.serve; pip install '.[serve]')",
    )
    serving = parser.add_argument_group("ray-serve")
    serving.add_argument(
        "--address",
        default=None,
        help="the Ray cluster (auto, head:6379, ray://head:10001); default FASHION_RAY_ADDRESS, else RAY_ADDRESS, "
        "else a local Ray started and stopped with this command",
    )
    serving.add_argument(
        "--proxy-location",
        choices=("EveryNode", "HeadOnly", "Disabled"),
        default="EveryNode",
        help="where Serve's HTTP proxies listen on --host:--port (default: every node with a replica)",
    )
    serving.add_argument("--detach", action="store_true", help="deploy, leave it running on the cluster, and exit")
    args = parser.parse_args(argv)
    configure_logging()
    if args.bootstrap:
        bootstrap()
    if args.engine == "ray-serve":
        try:
            from app import serve  # Ray is an optional extra
        except ImportError as exc:
            raise SystemExit(f"--engine ray-serve needs Ray Serve: pip install '.[serve]' ({exc})") from None
        serve.run(get_settings(), args.address, args.host, args.port, args.proxy_location, args.detach)
        return
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
