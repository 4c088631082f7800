"""Training and test data: Clothing Co-Parsing (Yang, Luo, Lin, CVPR 2014) and labelled folders.

CCP protocol of this project: train (and validate) on the 1,094 image-level photos plus the
odd-numbered pixel-level photos, whose labels are read off their masks as weak image-level labels;
test on the 502 even-numbered pixel-level photos, with labels, boxes and masks from their masks.
The odd-numbered photos keep their item boxes (never their masks) for box-supervised training and
are the only photos validation is drawn from: they are labelled the way the test photos are.
Training photos that are near-copies of test photos are dropped (``drop_near_copies``).
"""

from __future__ import annotations

import csv
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
import torch
from PIL import Image

from model.errors import ModelError
from model.imaging import ImageDecodeError, load_input
from model.labels import NON_ITEMS, item_labels

DATA_DIR_ENV = "FASHION_DATA_DIR"
MIN_LABEL_PIXELS = 100  # a label counts in a mask where it covers at least this many pixels
REGION_CELL = 8  # photo pixels per side of one cell of an item's coarse region (Sample.regions)
VALIDATION_FRACTION = 0.3  # of the pixel-level training photos: held out to choose on (fit_and_validation)
MIN_CROP_PIXELS = 2000  # an item's mask pixels in a photo for its crop to count as a product photo
CROP_MARGIN = 0.10  # of an item crop's box width and height, added on each side
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in the photo's pixels


class DataError(ModelError):
    """A data file is missing or unreadable; the message names it."""


@dataclass
class Sample:
    image: Path
    labels: list[str]  # item labels present (weak, image-level)
    mask: Path | None = None  # pixel-level annotation, for evaluation only
    source: str = ""  # "image-level" or "pixel-level"
    boxes: dict[str, Box] = field(default_factory=dict)  # item boxes, where the photo has a mask
    # Where each item's pixels are, coarsely (share of item pixels per REGION_CELL x REGION_CELL
    # block of the photo): lets training put a part's centre on the item, not between two shoes.
    regions: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data root: an explicit path, else $FASHION_DATA_DIR, else ../shared/data."""
    return Path(explicit or os.environ.get(DATA_DIR_ENV) or Path(__file__).resolve().parents[2] / "shared" / "data")


def _loadmat(path: Path, variable: str) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"missing annotation file {path}")
    try:
        return scipy.io.loadmat(str(path))[variable]
    except Exception as exc:
        raise DataError(f"cannot read {variable!r} from {path}: {exc}") from exc


class ClothingCoParsing:
    """The CCP layout as published: photos/, annotations/{image,pixel}-level/*.mat, label_list.mat."""

    def __init__(self, root: str | os.PathLike[str], non_items: tuple[str, ...] = NON_ITEMS) -> None:
        self.root = Path(root)
        if not (self.root / "photos").is_dir():
            raise DataError(f"{self.root} is not a Clothing Co-Parsing folder (no photos/ in it)")
        raw = _loadmat(self.root / "label_list.mat", "label_list").ravel()
        self.all_labels = [str(entry[0]) if len(entry) else "" for entry in raw]  # index = label id
        self.labels = item_labels(self.all_labels, non_items)

    def _photo(self, stem: str) -> Path:
        path = self.root / "photos" / f"{stem}.jpg"
        if not path.is_file():
            raise DataError(f"missing photo {path}")
        return path

    def _names(self, ids: np.ndarray) -> list[str]:
        wanted = set(self.labels)
        return sorted({self.all_labels[i] for i in ids.ravel().tolist() if self.all_labels[i] in wanted})

    def read_mask(self, path: Path) -> np.ndarray:
        return _loadmat(path, "groundtruth")

    def mask_labels(self, mask: np.ndarray) -> list[str]:
        ids, counts = np.unique(mask, return_counts=True)
        return self._names(ids[counts >= MIN_LABEL_PIXELS])

    def item_mask(self, mask: np.ndarray, label: str) -> np.ndarray:
        """(H, W) bool: the pixels of ``label`` in a pixel-level annotation."""
        return mask == self.all_labels.index(label)

    def item_crops(self, mask_path: Path) -> list[tuple[Image.Image, str]]:
        """(crop, label) of each item of a pixel-level photo seen as a product photo: an item with at
        least MIN_CROP_PIXELS pixels, cut by the box of its pixels grown by CROP_MARGIN of its size on
        each side (clipped to the photo)."""
        mask = self.read_mask(mask_path)
        with Image.open(self._photo(mask_path.stem)) as opened:
            photo = opened.convert("RGB")
        crops = []
        for label in self.mask_labels(mask):
            ys, xs = np.nonzero(self.item_mask(mask, label))
            if len(xs) < MIN_CROP_PIXELS:
                continue
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            dx, dy = CROP_MARGIN * (x1 - x0), CROP_MARGIN * (y1 - y0)
            box = (max(0, x0 - dx), max(0, y0 - dy), min(photo.width, x1 + dx), min(photo.height, y1 + dy))
            crops.append((photo.crop(tuple(round(v) for v in box)), label))
        return crops

    def mask_path(self, photo: Path) -> Path:
        return self.root / "annotations" / "pixel-level" / f"{photo.stem}.mat"

    def item_boxes(self, mask: np.ndarray) -> dict[str, Box]:
        """The box of every item label of a mask (all of the label's pixels, e.g. both shoes)."""
        boxes = {}
        for name in self.mask_labels(mask):
            ys, xs = np.nonzero(self.item_mask(mask, name))
            boxes[name] = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        return boxes

    def item_regions(self, mask: np.ndarray) -> dict[str, np.ndarray]:
        """Each item label's coarse region: the share of its pixels in every REGION_CELL-sided
        block of the photo, (ceil(H / cell), ceil(W / cell)) float32 in [0, 1]."""
        height, width = mask.shape
        rows, cols = -(-height // REGION_CELL), -(-width // REGION_CELL)
        padded = np.zeros((rows * REGION_CELL, cols * REGION_CELL), dtype=mask.dtype)  # 0: "null", no item
        padded[:height, :width] = mask
        blocks = padded.reshape(rows, REGION_CELL, cols, REGION_CELL)
        return {
            name: (blocks == self.all_labels.index(name)).mean((1, 3), dtype=np.float32)
            for name in self.mask_labels(mask)
        }

    def image_level(self) -> list[Sample]:
        folder = self.root / "annotations" / "image-level"
        return [
            Sample(self._photo(p.stem), self._names(_loadmat(p, "tags")), source="image-level")
            for p in sorted(folder.glob("*.mat"))
        ]

    def pixel_level(self, regions: bool = False) -> list[Sample]:
        """The pixel-level photos, each mask read once for its labels and item boxes (and, with
        ``regions``, the coarse item regions of the odd-numbered, training photos)."""
        folder = self.root / "annotations" / "pixel-level"
        samples = []
        for p in sorted(folder.glob("*.mat")):
            mask = self.read_mask(p)
            samples.append(
                Sample(
                    self._photo(p.stem),
                    self.mask_labels(mask),
                    mask=p,
                    source="pixel-level",
                    boxes=self.item_boxes(mask),
                    regions=self.item_regions(mask) if regions and int(p.stem) % 2 == 1 else {},
                )
            )
        return samples

    def split(self) -> tuple[list[Sample], list[Sample]]:
        """(train, test) of the protocol. Train samples carry no mask path (the test masks must never
        reach training), only the item boxes and coarse item regions of the odd-numbered
        pixel-level photos, read off their own masks."""
        pixel = self.pixel_level(regions=True)
        train = self.image_level() + [dataclasses.replace(s, mask=None) for s in pixel if int(s.image.stem) % 2 == 1]
        test = [s for s in pixel if int(s.image.stem) % 2 == 0]
        if not train or not test:
            raise DataError(f"no CCP annotations found under {self.root / 'annotations'}")
        return train, test

    def training_photos(self) -> tuple[list[Sample], list[tuple[str, str]]]:
        """The train split less its near-copies of test photos, and the (test, train) pairs dropped."""
        train, test = self.split()  # the test split is used only to find the copies
        return drop_near_copies(train, test)

    def validation_split(self, fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
        """(fit, validation) exactly as training splits the photos, the validation photos with their
        masks (they are training-split photos, so their masks may be used to choose)."""
        fit, val = fit_and_validation(self.training_photos()[0], fraction, seed)
        masks = {s.image: s.mask for s in self.pixel_level()}
        return fit, [dataclasses.replace(s, mask=masks[s.image]) for s in val]


def load_labelled_folder(folder: str | os.PathLike[str], labels_csv: str | os.PathLike[str]) -> list[Sample]:
    """A folder of images with a CSV of ``path,labels`` rows (labels separated by ``|``)."""
    folder = Path(folder)
    samples = []
    with open(labels_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            if "path" not in row or "labels" not in row:
                raise DataError(f"{labels_csv} needs the columns 'path' and 'labels'")
            image = folder / row["path"]
            if not image.is_file():
                raise DataError(f"missing image {image} (listed in {labels_csv})")
            names = [name.strip() for name in row["labels"].split("|") if name.strip()]
            samples.append(Sample(image, names))
    return samples


def label_vector(sample: Sample, labels: list[str]) -> torch.Tensor:
    index = {name: i for i, name in enumerate(labels)}
    target = torch.zeros(len(labels))
    for name in sample.labels:
        if name in index:
            target[index[name]] = 1.0
    return target


def load_image(path: str | os.PathLike[str], size: tuple[int, int]) -> torch.Tensor:
    """An image file -> (3, H, W) float tensor in [0, 1], letterboxed to ``size`` = (H, W)."""
    try:
        return load_input(path, size)[0]
    except ImageDecodeError as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc


def split_validation(
    samples: list[Sample], fraction: float, seed: int, source: str | None = "pixel-level"
) -> tuple[list[Sample], list[Sample]]:
    """A seeded random (train, validation) split: ``fraction`` of the samples of ``source`` (all
    samples when None) go to validation. CCP validates on pixel-level photos only, whose labelling
    habits are the test split's (image-level taggers say `heels` where pixel annotators say `shoes`)."""
    eligible = [i for i, s in enumerate(samples) if source is None or s.source == source]
    if not eligible:
        raise DataError(f"no {source} samples to validate on")
    order = np.random.default_rng(seed).permutation(eligible)
    held = set(order[: int(round(len(eligible) * fraction))].tolist())
    if not held:
        raise DataError(f"a validation fraction of {fraction} of {len(eligible)} samples holds none out")
    return [s for i, s in enumerate(samples) if i not in held], [s for i, s in enumerate(samples) if i in held]


def fit_and_validation(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """(fit, validation) as training holds photos out: from the pixel-level ones when there are any."""
    has_pixel = any(s.source == "pixel-level" for s in samples)
    return split_validation(samples, fraction, seed, "pixel-level" if has_pixel else None)


# Near-copies: perceptual hashes (64-bit pHash, 256-bit dHash) this close. Checked by eye on CCP: the
# six pairs this finds are the same photo re-cropped or re-encoded; the next closest pairs are not.
NEAR_COPY_PHASH = 8
NEAR_COPY_PHASH_WITH_DHASH = (10, 64)


def _hashes(path: Path) -> tuple[object, object]:
    import imagehash
    from PIL import Image

    with Image.open(path) as image:
        image.draft("RGB", (64, 96))  # JPEG decodes at a fraction of the size: hashing needs no detail
        return imagehash.phash(image), imagehash.dhash(image, 16)


def drop_near_copies(train: list[Sample], test: list[Sample]) -> tuple[list[Sample], list[tuple[str, str]]]:
    """Training samples that are not near-copies of a test photo, and the (test, train) pairs dropped."""
    test_hashes = [(s.image.stem, *_hashes(s.image)) for s in test]
    kept, dropped = [], []
    for sample in train:
        phash, dhash = _hashes(sample.image)
        copy_of = next(
            (
                name
                for name, p, d in test_hashes
                if (dp := phash - p) <= NEAR_COPY_PHASH  # type: ignore[operator]
                or (dp <= NEAR_COPY_PHASH_WITH_DHASH[0] and dhash - d <= NEAR_COPY_PHASH_WITH_DHASH[1])  # type: ignore[operator]
            ),
            None,
        )
        if copy_of is None:
            kept.append(sample)
        else:
            dropped.append((copy_of, sample.image.stem))
    return kept, dropped
