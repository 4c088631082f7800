"""Fetch Clothing Co-Parsing from its public repository when it is not on disk.

The archive of github.com/bearpaw/clothing-co-parsing is downloaded with a progress bar and
unpacked as ``<data root>/ccp`` (photos/, annotations/, label_list.mat). Offline machines point
FASHION_DATA_DIR at a copy instead.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from model.data import DataError

log = logging.getLogger(__name__)

CCP_ARCHIVE_URL = "https://github.com/bearpaw/clothing-co-parsing/archive/refs/heads/master.zip"


def ensure_ccp(data_root: Path, url: str = CCP_ARCHIVE_URL) -> Path:
    """``data_root/ccp``, downloading and unpacking it first if it is missing."""
    target = data_root / "ccp"
    if (target / "photos").is_dir():
        return target
    log.info("CCP not found at %s: downloading %s", target, url)
    data_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_root) as tmp:
        archive = Path(tmp) / "ccp.zip"
        try:
            with urllib.request.urlopen(url, timeout=30) as response, open(archive, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc="CCP") as bar:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        out.write(block)
                        bar.update(len(block))
        except (urllib.error.URLError, OSError) as exc:
            raise DataError(
                f"cannot download CCP from {url} ({exc}); set FASHION_DATA_DIR to a folder holding ccp/"
            ) from exc
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(tmp)
        roots = [p.parent for p in Path(tmp).rglob("label_list.mat")]
        if not roots:
            raise DataError(f"the archive from {url} holds no label_list.mat")
        shutil.move(str(roots[0]), target)  # moved only when whole: a failed run leaves no half folder
    return target
