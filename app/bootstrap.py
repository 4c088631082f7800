"""Set-up for the README's run command: data, a trained model and a bundle, each only if missing.

    python -m app.bootstrap

1. the data: $FASHION_DATA_DIR (CCP downloaded from its public repository when absent and online),
   when it is needed: to train the model, or to index when FASHION_CATALOGUE is not set;
2. the model: frozen-trunk training on CCP when FASHION_CHECKPOINT does not exist yet;
3. the bundle: the product catalogue (fashion-product/) indexed, else the CCP photos, when no bundle
   is live or the live one was built with another model. Only a first slice of it
   (FASHION_FIRST_SLICE items, spread over the catalogue) is embedded here, so the service answers
   in minutes; the service then adds the rest as a job and swaps to it without a restart.
Later runs find all three and finish in seconds.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from app.settings import get_settings
from app.uploads import UploadStore
from indexer.build import build_bundle
from indexer.bundle import BundleError, BundleStore
from indexer.catalogue import load_catalogue
from model.checkpoint import file_sha256
from model.data import data_dir
from model.download import ensure_ccp
from model.progress import configure_logging

log = logging.getLogger("app.bootstrap")


def default_catalogue(root: Path) -> Path:
    products = root / "fashion-product"
    return products if (products / "styles.csv").is_file() else root / "ccp" / "photos"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="data root (default $FASHION_DATA_DIR)")
    args = parser.parse_args(argv)
    configure_logging()
    settings = get_settings()
    root = data_dir(args.data)
    checkpoint = settings.checkpoint
    if not checkpoint.is_file() or not settings.catalogue:
        ensure_ccp(root)  # not needed to index a given catalogue with a given model (a container's start)

    if not checkpoint.is_file():
        from model.train import main as train

        log.info("no checkpoint at %s: training the attention model (frozen trunk)", checkpoint)
        products = root / "fashion-product"
        extra = ["--products", str(products)] if (products / "styles.csv").is_file() else []
        train(["--data", str(root), "--out", str(checkpoint.parent), *extra])
    else:
        log.info("model: %s", checkpoint)

    store = BundleStore(settings.bundles_dir)
    try:
        live = store.open()
        stale = live.model_sha256 != file_sha256(checkpoint)
    except BundleError:
        live, stale = None, True
    if stale:
        catalogue = settings.catalogue or default_catalogue(root)
        why = f"bundle {live.version} was built with another model" if live else "no readable bundle is live"
        log.info("%s: indexing %s into %s", why, catalogue, settings.bundles_dir)
        build_bundle(
            store,
            checkpoint,
            UploadStore(settings.uploads_dir).added_to(load_catalogue(catalogue)),  # as every reindex does
            settings.index_options(),
            first=settings.first_slice or None,
        )
    else:
        log.info("bundle %s is live and matches the model", live.version if live else "?")
    return store.root


if __name__ == "__main__":
    main()
