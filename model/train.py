"""Train the part-attention network (or its global-pooling baseline) on CCP.

    python -m model.train --out checkpoints/attention        # the default: box-supervised, group term, frozen, CPU
    python -m model.train --out checkpoints/weak --box-weight 0 --classification softmax --usage-weight 0 \
        --group-weight 0                                      # weakly supervised, the paper's loss
    python -m model.train --architecture global --group-weight 0 --out checkpoints/global
    python -m model.train --mode finetune --device cuda ...             # end to end, mixed precision

Frozen mode caches trunk maps (and their mirrors) once and trains only the heads. Training photos
that are near-copies of test photos are dropped first. Validation is drawn from the odd-numbered
pixel-level photos only. The best epoch by validation mAP is kept as best.pt; last.pt holds the
optimiser state for --resume.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import math
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from model.attention import config_anchors
from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import ModelConfig
from model.data import (
    REGION_CELL,
    ClothingCoParsing,
    Sample,
    data_dir,
    fit_and_validation,
    label_vector,
    load_image,
)
from model.encoding import map_descriptors
from model.errors import run_command
from model.features import trunk_features
from model.imaging import Placement, letterbox_placement
from model.labels import group_matrix
from model.losses import Item, total_loss
from model.metrics import multilabel_report
from model.network import NetworkOutput, PartAttentionNetwork
from model.progress import configure_logging, progress

log = logging.getLogger("model.train")

Items = list[Item]  # a photo's items (model.losses.Item)
CODEWORD_SAMPLE = 50_000  # descriptors for the k-means that starts the codewords
TAG_BIAS_LR_SCALE = 10.0  # the tag bias's learning rate, as a multiple of lr (TrainConfig.tag_bias)


@dataclass
class TrainConfig:
    out: Path  # folder for best.pt / last.pt
    data: Path | None = None  # FASHION_DATA_DIR by default
    mode: str = "frozen"  # "frozen": cached trunk maps, heads only; "finetune": end to end
    epochs: int = 25  # the reported default model's
    batch_size: int = 32
    lr: float = 1e-3
    trunk_lr: float = 1e-4  # finetune mode only
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    val_fraction: float = 0.3  # of the pixel-level (mask-labelled) training photos
    box_weight: float = 2.0  # λ_box: > 0 trains the box-supervised variant on photos with item boxes (0: weak)
    localiser_lr_scale: float = 10.0  # the localiser's learning rate, as a multiple of lr
    usage_weight: float = 0.1  # > 0 keeps the codewords in use (model.losses.codeword_usage_loss)
    centre_weight: float = 1.0  # > 0 pulls matched crops' centres onto their items' pixels (model.losses.box_loss)
    group_weight: float = 1.0  # > 0 adds the item groups' presence to L_cls (model.losses.group_presence_loss)
    # Learn how often the image-level taggers name each label, as a per-label bias added to the
    # scores of their photos in training only (Trainer.tag_bias); the model scores labels as the
    # pixel-level annotators (and the test split) name them.
    tag_bias: bool = False
    seed: int = 0  # the validation split, and (unless init_seed) the initialisation and batch order
    init_seed: int = -1  # >= 0: the initialisation and batch order alone, the split kept (run-to-run spread)
    device: str = "cpu"
    workers: int = 2
    cache_dir: Path = Path(".cache/features")
    resume: bool = False
    products: Path | None = None  # a Kaggle-layout product set: fit the product head on it after training


def cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to zero."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def region_on_frame(region: np.ndarray, placement: Placement, size: tuple[int, int]) -> torch.Tensor:
    """An item's coarse photo region (model.data.REGION_CELL pixels a cell) resampled onto the
    network input's letterboxed frame, one cell per REGION_CELL input pixels: (H', W') in [0, 1]."""
    rows, cols = size[0] // REGION_CELL, size[1] // REGION_CELL
    # Frame cell centres -> photo pixels -> the region's [-1, 1] sampling coordinates.
    region_h, region_w = (n * REGION_CELL for n in region.shape)
    xs = ((torch.arange(cols) + 0.5) / cols * placement.frame_width - placement.offset_x) / region_w
    ys = ((torch.arange(rows) + 0.5) / rows * placement.frame_height - placement.offset_y) / region_h
    grid = torch.stack(torch.meshgrid(xs * 2 - 1, ys * 2 - 1, indexing="xy"), -1)[None]  # (1, rows, cols, 2)
    source = torch.from_numpy(region).float()[None, None]
    return F.grid_sample(source, grid.float(), align_corners=False)[0, 0]


def photo_items(sample: Sample, labels: list[str], size: tuple[int, int]) -> tuple[Items, Items]:
    """A sample's item boxes (and regions) in the network input's map units, as photographed and mirrored."""
    if not sample.boxes:
        return [], []
    with Image.open(sample.image) as image:
        placement = letterbox_placement(image.width, image.height, size)[0]
    plain: Items = []
    mirrored: Items = []
    for name, box in sample.boxes.items():
        if name in labels:
            x0, y0, x1, y1 = placement.box_to_unit(box)
            region = sample.regions.get(name)
            on_frame = region_on_frame(region, placement, size) if region is not None else None
            plain.append((labels.index(name), torch.tensor([x0, y0, x1, y1]), on_frame))
            flipped = on_frame.flip(-1) if on_frame is not None else None
            mirrored.append((labels.index(name), torch.tensor([-x1, y0, -x0, y1]), flipped))
    return plain, mirrored


# inputs, targets, items, tagged (B,) 1.0 where the photo's labels are image-level tags, else 0.0
Batch = tuple[list[torch.Tensor] | torch.Tensor, torch.Tensor, list[Items], torch.Tensor]


class FrozenData:
    """Cached trunk maps of the training photos (and mirrors): batches of maps for the heads."""

    def __init__(self, model: PartAttentionNetwork, cfg: TrainConfig, fit: list[Sample], val: list[Sample]) -> None:
        self.cfg = cfg
        # One cache entry for all the photos, in path order, whatever the validation split.
        paths = sorted({s.image for s in fit + val})
        maps = trunk_features(model, paths, cfg.cache_dir, True, workers=cfg.workers, device=cfg.device)
        row = {path: i for i, path in enumerate(paths)}
        fit_rows = torch.tensor([row[s.image] for s in fit], dtype=torch.long)
        val_rows = torch.tensor([row[s.image] for s in val], dtype=torch.long)
        self.fit_maps = [level[fit_rows] for level in maps]
        self.val_maps = [level[val_rows, 0] for level in maps]
        self.steps_per_epoch = math.ceil(len(fit) / cfg.batch_size)

    def epoch(self, targets: torch.Tensor, items: list[tuple[Items, Items]], tagged: torch.Tensor) -> Iterator[Batch]:
        order = torch.randperm(len(targets))
        for i in range(0, len(order), self.cfg.batch_size):
            idx = order[i : i + self.cfg.batch_size]
            flip = torch.randint(0, 2, (len(idx),))
            x = [level[idx, flip].to(self.cfg.device).float() for level in self.fit_maps]
            yield (
                x,
                targets[idx].to(self.cfg.device),
                [items[j][f] for j, f in zip(idx.tolist(), flip.tolist(), strict=True)],
                tagged[idx].to(self.cfg.device),
            )

    def val_inputs(self) -> Iterator[list[torch.Tensor]]:
        for i in range(0, len(self.val_maps[0]), 64):
            yield [level[i : i + 64].to(self.cfg.device).float() for level in self.val_maps]

    def sample_inputs(self, count: int = 256) -> list[torch.Tensor]:
        idx = torch.randperm(len(self.fit_maps[0]))[:count]
        return [level[idx, 0].float().to(self.cfg.device) for level in self.fit_maps]


class PhotoDataset(Dataset[tuple[torch.Tensor, int, int]]):
    """Photos, mirrored at random when ``augment``: (image, index, mirrored)."""

    def __init__(self, samples: list[Sample], size: tuple[int, int], augment: bool) -> None:
        self.samples, self.size, self.augment = samples, size, augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        image = load_image(self.samples[i].image, self.size)
        flip = int(self.augment and random.random() < 0.5)
        return (image.flip(-1) if flip else image), i, flip


class PhotoData:
    """Decoded photos for end-to-end fine-tuning."""

    def __init__(self, model: PartAttentionNetwork, cfg: TrainConfig, fit: list[Sample], val: list[Sample]) -> None:
        self.cfg = cfg
        size = (model.config.image_height, model.config.image_width)
        self.loader = DataLoader(
            PhotoDataset(fit, size, True), cfg.batch_size, shuffle=True, num_workers=cfg.workers, drop_last=True
        )
        self.val_loader = DataLoader(PhotoDataset(val, size, False), cfg.batch_size, num_workers=cfg.workers)
        self.steps_per_epoch = len(self.loader)
        self.model = model

    def epoch(self, targets: torch.Tensor, items: list[tuple[Items, Items]], tagged: torch.Tensor) -> Iterator[Batch]:
        for images, idx, flip in self.loader:
            batch_items = [items[j][f] for j, f in zip(idx.tolist(), flip.tolist(), strict=True)]
            device = self.cfg.device
            yield images.to(device, non_blocking=True), targets[idx].to(device), batch_items, tagged[idx].to(device)

    def val_inputs(self) -> Iterator[torch.Tensor]:
        for images, _, _ in self.val_loader:
            yield images.to(self.cfg.device)

    def sample_inputs(self, count: int = 64) -> list[torch.Tensor]:
        batches = itertools.islice(self.loader, max(1, count // self.cfg.batch_size))
        images = torch.cat([x for x, _, _ in batches])
        self.model.trunk.eval()  # its ImageNet BN statistics stay as they are
        with torch.no_grad():
            return self.model.trunk_forward(images.to(self.cfg.device))


class Trainer:
    def __init__(self, model: PartAttentionNetwork, train_cfg: TrainConfig) -> None:
        self.model, self.cfg = model.to(train_cfg.device), train_cfg
        # The localiser gets a larger step: its gradient arrives through the crops' sampling and
        # bounded transforms, small next to the classifier's.
        place = [p for n, p in model.head.named_parameters() if ".place." in f".{n}."]
        placed = {id(p) for p in place}
        rest = [p for p in model.head_parameters() if id(p) not in placed]
        # Per-label offset of the image-level taggers' scores (TrainConfig.tag_bias): not part of the model.
        self.tag_bias = torch.nn.Parameter(torch.zeros(len(model.config.labels), device=train_cfg.device))
        groups: list[dict[str, object]] = [{"params": rest, "lr": train_cfg.lr}]
        if train_cfg.tag_bias:  # one number per label, far from its optimum at the start: no decay, larger steps
            groups.append({"params": [self.tag_bias], "lr": train_cfg.lr * TAG_BIAS_LR_SCALE, "weight_decay": 0.0})
        if place:
            groups.append({"params": place, "lr": train_cfg.lr * train_cfg.localiser_lr_scale})
        if train_cfg.mode == "finetune":
            groups.append({"params": list(model.trunk.parameters()), "lr": train_cfg.trunk_lr})
        else:
            model.trunk.requires_grad_(False)
        self.base_lrs = [float(g["lr"]) for g in groups]  # type: ignore[arg-type]
        self.optimizer = torch.optim.AdamW(groups, weight_decay=train_cfg.weight_decay)
        self.epoch, self.best = 0, -1.0
        self.history: list[dict[str, object]] = []
        self.validation_photos: list[str] = []  # file names, recorded so the figures can be checked again
        self.amp = train_cfg.device.startswith("cuda")
        self.anchors = config_anchors(model.config) if model.config.architecture == "attention" else None
        if train_cfg.group_weight > 0 and model.config.classification == "softmax":
            raise ValueError("the group presence term (--group-weight) needs sigmoid scores: add --group-weight 0")
        self.group_membership = torch.from_numpy(group_matrix(model.config.labels))

    def _set_lr(self, step: int, total: int, warmup: int) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = cosine_lr(step, total, base, warmup)

    def forward(self, inputs: list[torch.Tensor] | torch.Tensor):  # type: ignore[no-untyped-def]
        if isinstance(inputs, torch.Tensor):  # photos (finetune)
            return self.model(inputs)
        return self.model.head_forward(inputs)  # cached trunk maps (frozen)

    def step(self, batch: Batch) -> dict[str, float]:
        inputs, targets, items, tagged = batch
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            out = self.forward(inputs)
        if self.cfg.tag_bias:
            out = with_offset(out, tagged[:, None] * self.tag_bias)
        terms = total_loss(
            out,
            targets,
            self.model.config.classification,
            self.anchors,
            items,
            self.cfg.box_weight,
            self.cfg.usage_weight,
            self.cfg.centre_weight,
            self.cfg.group_weight,
            self.group_membership,
        )
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.optimizer.step()
        return {k: float(v.detach()) for k, v in terms.items()}

    def run_epoch(
        self,
        data: FrozenData | PhotoData,
        targets: torch.Tensor,
        items: list[tuple[Items, Items]],
        tagged: torch.Tensor,
    ) -> dict[str, float]:
        self.model.train()
        if self.cfg.mode == "frozen":
            self.model.trunk.eval()  # frozen BN statistics
        total = self.cfg.epochs * data.steps_per_epoch
        warmup = self.cfg.warmup_epochs * data.steps_per_epoch
        sums: dict[str, float] = {}
        desc = f"epoch {self.epoch + 1}/{self.cfg.epochs}"
        for i, batch in enumerate(progress(data.epoch(targets, items, tagged), data.steps_per_epoch, desc, "batches")):
            self._set_lr(self.epoch * data.steps_per_epoch + i, total, warmup)
            for key, value in self.step(batch).items():
                sums[key] = sums.get(key, 0.0) + value
        self.epoch += 1
        return {k: v / data.steps_per_epoch for k, v in sums.items()}

    @torch.inference_mode()
    def predict(self, data: FrozenData | PhotoData) -> np.ndarray:
        """Label probabilities of the validation photos."""
        self.model.eval()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            out = [self.model.probabilities(self.forward(x).scores).float().cpu() for x in data.val_inputs()]
        return torch.cat(out).numpy()

    def save(self, name: str, metrics: dict[str, object], with_optimizer: bool) -> None:
        extra: dict[str, object] = {
            "metrics": metrics,
            "training": {**{k: str(v) for k, v in vars(self.cfg).items()}, "epoch": self.epoch},
            "history": self.history,
            "validation_photos": self.validation_photos,
        }
        if with_optimizer:
            extra["optimizer"] = self.optimizer.state_dict()
            extra["best"] = self.best
            extra["tag_bias"] = self.tag_bias.detach().cpu()
        # A frozen trunk is the ImageNet one: the package has its weights. The best checkpoint is
        # the served artefact (float16, compact); last.pt resumes training (float32).
        with_trunk = self.cfg.mode != "frozen"
        save_checkpoint(self.cfg.out / name, self.model, with_trunk, half=not with_optimizer, **extra)

    def resume(self) -> bool:
        last = self.cfg.out / "last.pt"
        if not last.is_file():
            log.info("nothing to resume in %s, starting afresh", self.cfg.out)
            return False
        model, payload = load_checkpoint(last, self.cfg.device)
        trained_with = payload["training"].get("tag_bias", "False")  # its optimiser's parameter groups follow it
        if trained_with != str(self.cfg.tag_bias):
            raise ValueError(f"{last} was trained with tag_bias={trained_with}: resume it with the same setting")
        self.model.load_state_dict(model.state_dict())
        self.optimizer.load_state_dict(payload["optimizer"])
        with torch.no_grad():
            self.tag_bias.copy_(payload.get("tag_bias", torch.zeros_like(self.tag_bias)))
        self.epoch, self.best, self.history = payload["training"]["epoch"], payload["best"], payload["history"]
        log.info("resumed from %s at epoch %d (best val mAP %.2f)", last, self.epoch, self.best)
        return True


def with_offset(out: NetworkOutput, offset: torch.Tensor) -> NetworkOutput:
    """``out`` with a (B, C) offset added to every label score that is classified (fused, crops',
    whole map's). The per-step scores are left: the crop that scores a label highest is the same."""
    return dataclasses.replace(
        out,
        scores=out.scores + offset,
        crop_scores=out.crop_scores + offset if out.crop_scores is not None else None,
        whole_scores=out.whole_scores + offset if out.whole_scores is not None else None,
    )


@torch.no_grad()
def init_codewords(model: PartAttentionNetwork, trunk_maps: list[torch.Tensor], seed: int) -> None:
    """Start the texture codewords at k-means centres of real descriptors (after the BN statistics
    of the fusion layer have seen real maps), so the encoding assigns by content from step one."""
    if model.config.architecture != "attention":
        return
    model.reduce.train()
    norms = [m for m in model.reduce.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in norms:  # BN running statistics from real maps: a plain average over the sample
        norm.reset_running_stats()
        norm.momentum = None
    for i in range(0, len(trunk_maps[0]), 32):
        model.features([level[i : i + 32] for level in trunk_maps])
    for norm in norms:
        norm.momentum = 0.1
    model.reduce.eval()
    descriptors = torch.cat(
        [
            map_descriptors(model.features([level[i : i + 32] for level in trunk_maps])).flatten(0, 1)
            for i in range(0, len(trunk_maps[0]), 32)
        ]
    )
    pick = torch.randperm(len(descriptors), generator=torch.Generator().manual_seed(seed))[:CODEWORD_SAMPLE]
    model.attention.encoding.init_from_descriptors(descriptors[pick], seed)


@torch.no_grad()
def init_crops_from_boxes(model: PartAttentionNetwork, items: list[tuple[Items, Items]], seed: int) -> None:
    """Box-supervised runs start the K crops at the k-means centres of the training item boxes
    (centre and size), top to bottom, rather than on a grid: crops begin where items are."""
    from sklearn.cluster import KMeans

    boxes = torch.stack([box for plain, mirrored in items for _, box, _ in plain + mirrored]) if items else None
    steps = model.config.steps
    if model.config.architecture != "attention" or boxes is None or len(boxes) < steps:
        return
    cxcywh = torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], -1)
    centres = torch.from_numpy(KMeans(steps, n_init=4, random_state=seed).fit(cxcywh.numpy()).cluster_centers_).float()
    centres = centres[centres[:, 1].argsort()]
    corners = torch.cat([centres[:, :2] - centres[:, 2:] / 2, centres[:, :2] + centres[:, 2:] / 2], -1)
    model.attention.place.start_at(corners)


def train(model_cfg: ModelConfig, cfg: TrainConfig, train_samples: list[Sample]) -> Path:
    """Train on ``train_samples`` (a validation part is split off); returns the best checkpoint."""
    fit, val = fit_and_validation(train_samples, cfg.val_fraction, cfg.seed)
    init_seed = cfg.seed if cfg.init_seed < 0 else cfg.init_seed
    seed_everything(init_seed)
    model = PartAttentionNetwork(model_cfg)
    trainer = Trainer(model, cfg)
    trainer.validation_photos = sorted(s.image.name for s in val)
    labels, size = model_cfg.labels, (model_cfg.image_height, model_cfg.image_width)
    y_fit = torch.stack([label_vector(s, labels) for s in fit])
    tagged = torch.tensor([s.source == "image-level" for s in fit], dtype=torch.float32)
    y_val = torch.stack([label_vector(s, labels) for s in val]).numpy()
    items = [photo_items(s, labels, size) for s in fit] if cfg.box_weight > 0 else [([], [])] * len(fit)
    log.info(
        "training %s/%s on %d photos (%d with item boxes, box weight %g), validating on %d",
        model_cfg.architecture,
        cfg.mode,
        len(fit),
        sum(bool(i[0]) for i in items),
        cfg.box_weight,
        len(val),
    )
    data = FrozenData(model, cfg, fit, val) if cfg.mode == "frozen" else PhotoData(model, cfg, fit, val)
    if not (cfg.resume and trainer.resume()):
        init_codewords(model, data.sample_inputs(), init_seed)
        if cfg.box_weight > 0:
            init_crops_from_boxes(model, [i for i in items if i[0]], init_seed)
    started = time.monotonic()
    while trainer.epoch < cfg.epochs:
        terms = trainer.run_epoch(data, y_fit, items, tagged)
        val_report = multilabel_report(y_val, trainer.predict(data), labels, model_cfg.classification)
        val_map = float(val_report["labels"]["map"])  # type: ignore[index]
        record = {
            "epoch": trainer.epoch,
            **terms,
            "val_map": val_map,
            "val_group_map": val_report["groups"]["map"],  # type: ignore[index]
            "seconds": round(time.monotonic() - started, 1),
        }
        trainer.history.append(record)
        log.info(
            "epoch %d: loss %.4f, val mAP %.2f (groups %.2f)",
            trainer.epoch,
            terms["loss"],
            val_map,
            record["val_group_map"],
        )
        if val_map > trainer.best:
            trainer.best = val_map
            trainer.save("best.pt", {"validation": val_report}, with_optimizer=False)
        trainer.save("last.pt", {"validation": val_report}, with_optimizer=True)
    log.info("best val mAP %.2f; checkpoint %s", trainer.best, cfg.out / "best.pt")
    if cfg.products is not None:
        from model.products import add_product_head

        add_product_head(cfg.out / "best.pt", cfg.products, cfg.cache_dir, cfg.workers, cfg.device)
    return cfg.out / "best.pt"


# ModelConfig fields the command line sets (the rest keep their defaults, recorded in the checkpoint).
MODEL_OPTIONS = (
    "architecture",
    "trunk",
    "classification",
    "steps",
    "channels",
    "hidden",
    "anchors",
    "multiscale",
    "image_height",
    "image_width",
    "whole_scores",
)


def _add_dataclass_options(
    parser: argparse.ArgumentParser, defaults: object, names: list[str] | tuple[str, ...]
) -> None:
    """One --option per dataclass field, its type and default taken from the dataclass."""
    for name in names:
        value = getattr(defaults, name)
        flag = f"--{name.replace('_', '-')}"
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        elif isinstance(value, Path | None):
            parser.add_argument(flag, type=Path, default=value)
        else:
            parser.add_argument(flag, type=type(value), default=value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for best.pt and last.pt")
    train_defaults = TrainConfig(out=Path("."))
    train_names = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "out"]
    _add_dataclass_options(parser, train_defaults, train_names)
    _add_dataclass_options(parser, ModelConfig(labels=["placeholder"]), MODEL_OPTIONS)
    args = parser.parse_args(argv)
    configure_logging()

    ccp = ClothingCoParsing(data_dir(args.data) / "ccp")
    train_samples, dropped = ccp.training_photos()
    log.info("dropped %d training photos that are near-copies of test photos: %s", len(dropped), dropped)
    model_cfg = ModelConfig(labels=ccp.labels, **{k: getattr(args, k) for k in MODEL_OPTIONS})
    train(model_cfg, TrainConfig(out=args.out, **{k: getattr(args, k) for k in train_names}), train_samples)


if __name__ == "__main__":
    sys.exit(run_command(main))
