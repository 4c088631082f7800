"""The published OpenAPI document tells the truth: schemathesis (every check) fuzzes a live API
on a small catalogue and finds no response that the document does not describe."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from tests.app.conftest import ADMIN_KEY, photo_bytes
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


def test_the_upload_forms_published_id_rules_are_enforced(
    tmp_path: Path, tiny_checkpoint: Path, bundles_dir: Path, processes: Processes
) -> None:
    """The multipart form's fields travel as text, so schemathesis generates few negative forms (and
    none of its string bounds): each rule the document publishes for the upload's ``id`` is broken
    here on purpose, with a real photo, and must be refused (an empty id once got a made-up one)."""
    api = processes.api(service_env(tiny_checkpoint, bundles_dir, None), tmp_path / "api.log")
    document = httpx.get(f"{api}/openapi.json").json()
    content = document["paths"]["/admin/items"]["post"]["requestBody"]["content"]
    rules = content["multipart/form-data"]["schema"]["properties"]["id"]
    broken = {
        "minLength": "x" * (rules["minLength"] - 1),
        "maxLength": "x" * (rules["maxLength"] + 1),
        "pattern": "-x",
    }
    assert broken["minLength"] == "" and not re.search(rules["pattern"], broken["pattern"])
    for rule, item_id in broken.items():
        response = httpx.post(
            f"{api}/admin/items",
            headers={"X-API-Key": ADMIN_KEY},
            data={"id": item_id},
            files={"image": ("p.jpg", photo_bytes(), "image/jpeg")},
        )
        assert (response.status_code, response.json()["code"]) == (422, "invalid_item"), (rule, response.text)
    valid = httpx.post(
        f"{api}/admin/items",
        headers={"X-API-Key": ADMIN_KEY},
        data={"id": "x" * rules["maxLength"]},
        files={"image": ("p.jpg", photo_bytes(), "image/jpeg")},
    )
    assert valid.status_code == 202, valid.text
