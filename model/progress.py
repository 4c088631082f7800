"""Progress that shows everywhere: a bar on a terminal, a log line every 30 s off one (logs, CI, containers)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
LOG_EVERY_S = 30.0

log = logging.getLogger(__name__)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    """The one log set-up of every command line (training, indexing, the service, its worker)."""
    logging.basicConfig(level=level, format=LOG_FORMAT)


def progress(
    iterable: Iterable[T], total: int, desc: str, units: str = "items", every_s: float = LOG_EVERY_S
) -> Iterator[T]:
    """Yield from ``iterable``, showing ``done/total`` on a bar or in periodic log lines."""
    if sys.stderr.isatty():
        yield from tqdm(iterable, total=total, desc=desc, unit=units.removesuffix("es").removesuffix("s"), leave=False)
        return
    started = last = time.monotonic()
    log.info("%s: %d %s", desc, total, units)
    for done, item in enumerate(iterable, 1):
        yield item
        now = time.monotonic()
        if now - last >= every_s or done == total:
            last = now
            log.info("%s: %d/%d %s (%.1f/s)", desc, done, total, units, done / max(now - started, 1e-9))
