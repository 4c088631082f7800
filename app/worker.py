"""The indexer worker process: runs reindex / add / delete jobs from the Redis queue.

FASHION_REDIS_URL=redis://localhost:6379/0 python -m app.worker

SIGTERM (or Ctrl-C) stops it: it takes no new job, and its running job gets
FASHION_WORKER_STOP_GRACE_S (less a margin) to finish before it is handed back to the queue for
another worker (app.jobs). Compose's `stop_grace_period` for the worker reads the same variable.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from app.coordination import make_coordinator
from app.jobs import job_thread_running, worker_loop
from app.settings import get_settings
from model.progress import configure_logging

log = logging.getLogger("app.worker")


async def main() -> None:
    settings = get_settings()
    if not settings.redis_url:
        raise SystemExit("a separate worker needs FASHION_REDIS_URL (without Redis the API runs jobs itself)")
    coordinator = make_coordinator(settings.redis_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set():
            log.info("%s: taking no new job (grace period %.0f s)", sig.name, settings.worker_stop_grace_s)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await worker_loop(coordinator, settings, stop)
    finally:
        await coordinator.close()


if __name__ == "__main__":
    configure_logging()
    asyncio.run(main())
    if job_thread_running():
        # The job is back in the queue and its thread stops at its next progress report; it
        # publishes nothing, so the process need not wait for it (nor for its decode workers).
        logging.shutdown()
        os._exit(0)
