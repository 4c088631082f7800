from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

# The runtime's exports of the tests' checkpoints go to a folder of this session, not the working
# tree's .cache. Set here, before any import of model.runtime (which reads it once), and so before
# the conftests below this one are imported (pytest loads them after this, when a subfolder is run);
# inherited by the service processes the tests start.
RUNTIME_CACHE = tempfile.mkdtemp(prefix="fashion-runtime-cache-")
os.environ["FASHION_RUNTIME_CACHE"] = RUNTIME_CACHE

import pytest  # noqa: E402
import torch  # noqa: E402

from model.checkpoint import save_checkpoint  # noqa: E402
from model.network import PartAttentionNetwork  # noqa: E402
from tests.helpers import SHARED_DATA, tiny_config  # noqa: E402


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(RUNTIME_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def ccp_root() -> Path:
    root = SHARED_DATA / "ccp"
    if not root.is_dir():
        pytest.skip(f"CCP data not found at {root} (set FASHION_DATA_DIR)")
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny model: enough to exercise the indexer's and the service's plumbing."""
    torch.manual_seed(0)
    model = PartAttentionNetwork(tiny_config()).eval()
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", model)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A real redis-server on a free loopback port, which tests may stop and start again."""

    def __init__(self, workdir: Path, options: Sequence[str] = ("--save", "", "--appendonly", "no")) -> None:
        self.port, self.workdir, self.options = free_port(), workdir, list(options)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (`make test` installs it: apt-get install redis-server)")
        self.process = subprocess.Popen(
            [
                binary,
                *self.options,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()
