"""The indexer worker process: runs reindex / add / delete jobs from the Redis queue.

FASHION_REDIS_URL=redis://localhost:6379/0 python -m app.worker
"""

from __future__ import annotations

import asyncio
import signal

from app.coordination import make_coordinator
from app.jobs import worker_loop
from app.settings import get_settings
from model.progress import configure_logging


async def main() -> None:
    settings = get_settings()
    if not settings.redis_url:
        raise SystemExit("a separate worker needs FASHION_REDIS_URL (without Redis the API runs jobs itself)")
    coordinator = make_coordinator(settings.redis_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await worker_loop(coordinator, settings, stop)
    finally:
        await coordinator.close()


if __name__ == "__main__":
    configure_logging()
    asyncio.run(main())
