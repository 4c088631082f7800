"""The configuration table of docs/configuration.md, rendered from the settings class.

Every field of :class:`app.settings.Settings` is one row: its environment variable, its default and
what it does. The page holds the rendered table between two markers; ``tests/test_docs.py`` fails
when the page and the class disagree, and ``python -m app.settings_doc`` writes the table again.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from app.settings import Settings

PAGE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
START = "<!-- settings-table:start (python -m app.settings_doc writes this table) -->"
END = "<!-- settings-table:end -->"

# What each field does, for the operator. A field without an entry fails tests/test_docs.py.
DESCRIPTIONS: dict[str, str] = {
    "environment": "`production` refuses to start with the default admin key",
    "admin_api_key": "admin key (`X-API-Key`), compared in constant time",
    "checkpoint": "the model: the committed one by default; `make train` writes `checkpoints/attention/best.pt`",
    "bundles_dir": "the bundle store (versions + `current` pointer)",
    "catalogue": "what `POST /admin/reindex` indexes when the request names nothing",
    "uploads_dir": "products added by upload (`POST /admin/items`, multipart): kept here, and every reindex "
    "includes them",
    "catalogue_roots": "JSON list of folders admin jobs may read (catalogues, metadata, item photos; the uploads "
    "folder always); empty: the folder of `FASHION_CATALOGUE`; 403 outside",
    "reindex_min_fraction": "a reindex yielding fewer than this share of the live bundle's items fails (a "
    "request's `force` overrides; never zero items)",
    "job_stale_s": "a running job's lease: one whose worker has not renewed it for this long (killed or lost) "
    "is re-queued, and failed after `FASHION_JOB_MAX_ATTEMPTS` runs",
    "job_max_attempts": "runs a job may have when its worker keeps vanishing (a run handed back by a stopped "
    "worker does not count); then it fails with the reason",
    "worker_stop_grace_s": "a stopped worker (SIGTERM) lets its running job finish for this long less 5 s, "
    "else hands it back to the queue; compose's `stop_grace_period` for the worker reads the same variable",
    "redis_url": "Redis for coordination; unset: in-process equivalent (one process)",
    "embedded_worker": "run admin jobs inside the API process (set `false` with a separate `python -m app.worker`)",
    "device": "`cuda` on a GPU machine",
    "runtime": "where the forward pass runs on a CPU: `openvino`, `onnxruntime` (`pip install '.[onnx]'`) or "
    "`pytorch`; the checkpoint is exported once (on a CUDA device PyTorch runs)",
    "runtime_cache": "the runtime's cached exports of the checkpoint (the indexer's command reads it too)",
    "first_slice": "items `make serve` indexes before the service starts when no bundle is live (spread over the "
    "catalogue); a job adds the rest and the service swaps to it; 0: all at once",
    "max_upload_bytes": "413 above (10 MiB by default)",
    "max_pixels": "422 above (decompression bombs); a large JPEG counts the pixels it is decoded at "
    "(down to an eighth of its side), its full size at most twice this",
    "max_image_side": "422 for a longer side",
    "max_aspect_ratio": "422 for a longer shape (the long side over this many times the short one)",
    "max_batch": "micro-batching: photos per forward at most (a wide photo's views, `FASHION_WIDE_FILL`, go "
    "in the same forward: up to 3 images each)",
    "max_wait_ms": "micro-batching: how long a forward waits for company (0: take the photos queued while the "
    "previous forward ran, and start)",
    "queue_limit": "photos waiting for the model; 503 beyond",
    "cache_ttl_s": "response cache lifetime (image hash + bundle + options); 0 turns it off",
    "search_threads": "FAISS OpenMP threads for one photo's search, set in the thread that searches (OpenMP "
    "counts threads per calling thread)",
    "bundle_poll_s": "pointer check, catching announcements missed while Redis was away",
    "default_max_parts": "request default: parts at most (chosen on validation with the part threshold)",
    "default_candidates": "request default: neighbours searched per part",
    "labels_from": "metadata field that picks each product's one part index when indexing (the Kaggle layout's "
    "category, mapped to CCP labels, or the shop's names through `FASHION_CATEGORY_MAP`); items without it, with a "
    'value neither map knows, or all items with the variable set to `""`, go by the '
    "model's product head (one category per product; without a head, the street labels it predicts). Items "
    "added later are placed the way their bundle was built",
    "category_map": "the shop's category map for the `FASHION_LABELS_FROM` field: CSV `category,label` "
    "(commas, semicolons, tabs or |) or YAML "
    "`category: label`, each label a part label of the model or `none` "
    "([Your own category names](index.md#your-own-category-names)); read at start (a bad map stops it with the "
    "row's problem) and by every reindex",
    "part_threshold": "a query part's group probability at least (one part per item group)",
    "part_floor": "below the threshold, the most probable group is answered anyway (marked `confident: false`) "
    "if it reaches this floor; a photo whose groups are all below it gets an empty answer",
    "trim_max_area": "a photo whose detail (the person) covers at most this share of it, on a plain or "
    "out-of-focus margin (zoomed out, a studio shot with white space), is cut to that detail's box before the "
    "model looks, so the person is drawn at the scale the model was trained on; boxes still come back in the "
    "whole photo's pixels. 0: never",
    "wide_fill": "a photo wider than the model's portrait frame, filling at most this share of its height (a "
    "half-body shot, a landscape phone photo), is looked at three times in one batch, drawn at the frame's top, "
    "middle and bottom, and each label keeps its highest probability: the model learnt where items sit from "
    "full-length photos. Such a photo costs three images in the forward instead of one; the whole-photo search "
    "(`mode=global`) sees it once. 0: never",
    "wide_part_threshold": "the part threshold for such a wide photo (looked at three times): its items are cut "
    "at the photo's edge (a coat's hem, a waistband, a bag at the hip) and the model is surer of them less often",
    "item_label_threshold": "indexing a product of unknown category with a model without a product head: a "
    "predicted label's probability at least for the product to join that label's index",
    "index_engine": "who embeds a reindex job's catalogue: the worker itself (`local`) or Ray Data (`ray`)",
    "ray_address": "with `ray`: the cluster's address; unset: a local Ray the job starts and stops. Also the "
    "cluster `python -m app --engine ray-serve` deploys to (unset: `RAY_ADDRESS`, else a local Ray)",
    "serve_num_replicas": "Ray Serve: replicas of the API, each its own model copy and micro-batcher "
    "([Ray Serve](deployment.md#ray-serve-replicas-on-several-nodes)); more than one needs `FASHION_REDIS_URL`",
    "serve_autoscaling_min": "Ray Serve autoscaling: replicas at least (unset: 1); needs the max",
    "serve_autoscaling_max": "Ray Serve autoscaling: replicas at most; set, it replaces the fixed count",
    "serve_target_ongoing_requests": "Ray Serve autoscaling: the requests in hand per replica it scales to "
    "(about a full batch)",
    "serve_max_ongoing_requests": "Ray Serve: requests one replica holds at once (its micro-batcher batches "
    "them); more wait at Serve's router",
    "serve_max_queued_requests": "Ray Serve: requests waiting at the router at most, then 503 with `Retry-After`; "
    "-1: no bound",
    "serve_num_cpus": "Ray Serve: CPUs reserved per replica (its PyTorch threads; OpenVINO uses its node's cores)",
    "serve_num_gpus": "Ray Serve: GPUs per replica (set `FASHION_DEVICE=cuda`); Ray places replicas on GPU nodes",
    "serve_relay": "Ray Serve: HTTP enters through a thin ingress that sends a request whose replica died to "
    "another replica (a read or `POST /recommend`) or answers 503 with `Retry-After`; `false`: Serve's proxy "
    "calls the replicas directly, one hop fewer, and a dying replica's requests get 500",
    "serve_batching": "Ray Serve: who batches a replica's requests into one forward: the project's "
    "micro-batcher (`micro-batcher`, as under uvicorn) or Ray Serve's `@serve.batch` (`serve`), with the same "
    "`FASHION_MAX_BATCH` and `FASHION_MAX_WAIT_MS`; under load `@serve.batch` forwards one or two photos at a time "
    "and gave 0.47-0.54x uvicorn's throughput against the micro-batcher's 0.66x ([Ray Serve](results.md#ray-serve))",
}

# Defaults computed from the environment at import time, written as they are when it is unset
# (model.runtime reads FASHION_RUNTIME_CACHE itself, so the class's default would echo the variable).
ENVIRONMENT_DEFAULTS: dict[str, str] = {"runtime_cache": ".cache/runtime"}


def env_name(field: str) -> str:
    return f"{Settings.model_config.get('env_prefix', '')}{field}".upper()


def _default(field: str) -> str:
    if field in ENVIRONMENT_DEFAULTS:
        return f"`{ENVIRONMENT_DEFAULTS[field]}`"
    value: Any = Settings.model_fields[field].get_default(call_default_factory=True, validated_data={})
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None:
        return "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Path | str):
        return f"`{value}`"
    return f"`{value!s}`"


def render_table() -> str:
    """The markdown table of every settings field, in the class's order."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for field in Settings.model_fields:
        description = DESCRIPTIONS.get(field, "(undocumented: add it to app/settings_doc.py)")
        rows.append(f"| `{env_name(field)}` | {_default(field)} | {description} |")
    return "\n".join(rows)


def page_table(text: str) -> str:
    """The table between the markers of the page's text."""
    start, end = text.index(START) + len(START), text.index(END)
    return text[start:end].strip()


def write_page(page: Path = PAGE) -> None:
    text = page.read_text()
    start, end = text.index(START) + len(START), text.index(END)
    page.write_text(f"{text[:start]}\n{render_table()}\n{text[end:]}")


if __name__ == "__main__":
    write_page(Path(sys.argv[1]) if len(sys.argv) > 1 else PAGE)
    print(f"wrote the settings table of {PAGE if len(sys.argv) < 2 else sys.argv[1]}")
