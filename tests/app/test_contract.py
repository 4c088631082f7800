"""The published OpenAPI document tells the truth: schemathesis (every check) fuzzes a live API
on a small catalogue and finds no response that the document does not describe."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.app.conftest import ADMIN_KEY
from tests.app.live import ROOT, Processes, service_env

CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES_PER_OPERATION = 25  # ~600 cases in all: a minute here; the full run is in the README


def test_schemathesis_finds_no_contract_failure(
    tmp_path: Path, tiny_checkpoint: Path, bundles_dir: Path, processes: Processes
) -> None:
    api = processes.api(service_env(tiny_checkpoint, bundles_dir, None), tmp_path / "api.log")
    command = [
        *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "--no-color", "run"),
        *(f"{api}/openapi.json", "--checks", "all", "--max-examples", str(EXAMPLES_PER_OPERATION)),
        *("--header", f"X-API-Key: {ADMIN_KEY}", "--seed", "1", "--generation-database", "none"),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SCHEMATHESIS_HOOKS": "tests.app.schemathesis_hooks"}
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-6000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", report)
    assert counts and int(counts[2]) >= 300, report[-2000:]  # a real run: hundreds of cases, all passed
    print(f"schemathesis: {counts[0]}")  # shown with pytest -s
