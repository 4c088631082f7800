import zipfile
from pathlib import Path

import pytest

from model.data import DataError
from model.download import ensure_ccp


def test_downloads_and_unpacks_an_archive(tmp_path: Path) -> None:
    archive = tmp_path / "master.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("clothing-co-parsing-master/label_list.mat", b"mat")
        z.writestr("clothing-co-parsing-master/photos/0001.jpg", b"jpg")
    root = tmp_path / "data"
    target = ensure_ccp(root, url=archive.as_uri())
    assert target == root / "ccp" and (target / "photos" / "0001.jpg").read_bytes() == b"jpg"
    assert ensure_ccp(root, url="file:///nowhere") == target  # present: nothing fetched


def test_offline_gives_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="FASHION_DATA_DIR"):
        ensure_ccp(tmp_path, url=(tmp_path / "missing.zip").as_uri())
    assert not (tmp_path / "ccp").exists()
