"""Train the part-attention network (or its global-pooling baseline) on CCP.

    python -m model.train --out checkpoints/attention            # frozen trunk, CPU, minutes
    python -m model.train --architecture global --out checkpoints/global
    python -m model.train --mode finetune --device cuda ...       # end to end, mixed precision

Frozen mode caches trunk maps (and their mirrors) once and trains only the heads. The best epoch
by validation mAP is kept as best.pt; last.pt holds the optimiser state for --resume.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import ModelConfig
from model.data import ClothingCoParsing, Sample, data_dir, label_vector, load_image, split_validation
from model.features import trunk_features
from model.losses import total_loss
from model.metrics import multilabel_report
from model.network import PartAttentionNetwork

log = logging.getLogger("model.train")


@dataclass
class TrainConfig:
    out: Path  # folder for best.pt / last.pt
    data: Path | None = None  # FASHION_DATA_DIR by default
    mode: str = "frozen"  # "frozen": cached trunk maps, heads only; "finetune": end to end
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    trunk_lr: float = 1e-4  # finetune mode only
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "cpu"
    workers: int = 2
    cache_dir: Path = Path(".cache/features")
    resume: bool = False


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


class PhotoDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Photos with label vectors; mirrored at random when ``augment``."""

    def __init__(self, samples: list[Sample], labels: list[str], size: tuple[int, int], augment: bool) -> None:
        self.samples, self.labels, self.size, self.augment = samples, labels, size, augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = load_image(self.samples[i].image, self.size)
        if self.augment and random.random() < 0.5:
            image = image.flip(-1)
        return image, label_vector(self.samples[i], self.labels)


def _targets(samples: list[Sample], labels: list[str]) -> torch.Tensor:
    return torch.stack([label_vector(s, labels) for s in samples])


class Trainer:
    def __init__(self, model: PartAttentionNetwork, train_cfg: TrainConfig) -> None:
        self.model, self.cfg = model.to(train_cfg.device), train_cfg
        groups = [{"params": model.head_parameters(), "lr": train_cfg.lr}]
        if train_cfg.mode == "finetune":
            groups.append({"params": list(model.trunk.parameters()), "lr": train_cfg.trunk_lr})
        else:
            model.trunk.requires_grad_(False)
        self.base_lrs = [g["lr"] for g in groups]
        self.optimizer = torch.optim.AdamW(groups, weight_decay=train_cfg.weight_decay)
        self.epoch, self.best, self.history = 0, -1.0, []
        self.amp = train_cfg.device.startswith("cuda")

    def _set_lr(self, step: int, total: int, warmup: int) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = cosine_lr(step, total, base, warmup)

    def _step(self, out_fn, targets: torch.Tensor) -> dict[str, float]:  # type: ignore[no-untyped-def]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            out = out_fn()
        terms = total_loss(out, targets, self.model.config.classification, self.model.config.anchor_radius)
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.optimizer.step()
        return {k: float(v.detach()) for k, v in terms.items()}

    def set_train_mode(self) -> None:
        self.model.train()
        if self.cfg.mode == "frozen":
            self.model.trunk.eval()  # frozen BN statistics

    def save(self, name: str, metrics: dict[str, object], with_optimizer: bool) -> None:
        extra: dict[str, object] = {
            "metrics": metrics,
            "training": {**{k: str(v) for k, v in vars(self.cfg).items()}, "epoch": self.epoch},
            "history": self.history,
        }
        if with_optimizer:
            extra["optimizer"] = self.optimizer.state_dict()
            extra["best"] = self.best
        save_checkpoint(self.cfg.out / name, self.model, **extra)

    def resume(self) -> None:
        last = self.cfg.out / "last.pt"
        if not last.is_file():
            log.info("nothing to resume in %s, starting afresh", self.cfg.out)
            return
        model, payload = load_checkpoint(last, self.cfg.device)
        self.model.load_state_dict(model.state_dict())
        self.optimizer.load_state_dict(payload["optimizer"])
        self.epoch, self.best, self.history = payload["training"]["epoch"], payload["best"], payload["history"]
        log.info("resumed from %s at epoch %d (best val mAP %.2f)", last, self.epoch, self.best)


@torch.inference_mode()
def predict_scores(model: PartAttentionNetwork, batches) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Label probabilities for an iterable of trunk-map or image batches (already on device)."""
    model.eval()
    out = [model.probabilities(model.head_forward(b).scores).float().cpu() for b in batches]
    return torch.cat(out).numpy()


def train(model_cfg: ModelConfig, cfg: TrainConfig, train_samples: list[Sample]) -> Path:
    """Train on ``train_samples`` (a validation part is split off); returns the best checkpoint."""
    seed_everything(cfg.seed)
    fit, val = split_validation(train_samples, cfg.val_fraction, cfg.seed)
    model = PartAttentionNetwork(model_cfg)
    trainer = Trainer(model, cfg)
    if cfg.resume:
        trainer.resume()
    labels = model_cfg.labels
    y_fit, y_val = _targets(fit, labels), _targets(val, labels)
    log.info("training %s/%s on %d photos, validating on %d", model_cfg.architecture, cfg.mode, len(fit), len(val))

    size = (model_cfg.image_height, model_cfg.image_width)
    if cfg.mode == "frozen":
        f_fit = trunk_features(
            model, [s.image for s in fit], cfg.cache_dir, True, workers=cfg.workers, device=cfg.device
        )
        f_val = trunk_features(
            model, [s.image for s in val], cfg.cache_dir, False, workers=cfg.workers, device=cfg.device
        )

        def epoch_batches():  # type: ignore[no-untyped-def]
            order = torch.randperm(len(fit))
            for i in range(0, len(order), cfg.batch_size):
                idx = order[i : i + cfg.batch_size]
                flip = torch.randint(0, 2, (len(idx),))
                x = f_fit[idx, flip].to(cfg.device).float()
                yield (lambda x=x: model.head_forward(x)), y_fit[idx].to(cfg.device)

        def val_batches():  # type: ignore[no-untyped-def]
            for i in range(0, len(val), 64):
                yield f_val[i : i + 64, 0].to(cfg.device).float()

        steps_per_epoch = math.ceil(len(fit) / cfg.batch_size)
        score_val = lambda: predict_scores(model, val_batches())  # noqa: E731
    else:
        loader = DataLoader(
            PhotoDataset(fit, labels, size, augment=True),
            batch_size=cfg.batch_size,
            shuffle=True,
            num_workers=cfg.workers,
            drop_last=True,
        )
        val_loader = DataLoader(
            PhotoDataset(val, labels, size, False), batch_size=cfg.batch_size, num_workers=cfg.workers
        )

        def epoch_batches():  # type: ignore[no-untyped-def]
            for images, targets in loader:
                images = images.to(cfg.device, non_blocking=True)
                yield (lambda x=images: model(x)), targets.to(cfg.device)

        @torch.inference_mode()
        def score_val() -> np.ndarray:
            model.eval()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=trainer.amp):
                out = [model.probabilities(model(x.to(cfg.device)).scores).float().cpu() for x, _ in val_loader]
            return torch.cat(out).numpy()

        steps_per_epoch = len(loader)

    total_steps = cfg.epochs * steps_per_epoch
    warmup = cfg.warmup_epochs * steps_per_epoch
    started = time.monotonic()
    while trainer.epoch < cfg.epochs:
        trainer.set_train_mode()
        sums: dict[str, float] = {}
        bar = tqdm(
            epoch_batches(),
            total=steps_per_epoch,
            desc=f"epoch {trainer.epoch + 1}/{cfg.epochs}",
            leave=False,
            disable=None,
        )
        for i, (out_fn, targets) in enumerate(bar):
            trainer._set_lr(trainer.epoch * steps_per_epoch + i, total_steps, warmup)
            terms = trainer._step(out_fn, targets)
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value
            bar.set_postfix(loss=f"{terms['loss']:.4f}")
        trainer.epoch += 1
        val_report = multilabel_report(y_val.numpy(), score_val(), labels)
        val_map = float(val_report["labels"]["map"])  # type: ignore[index]
        record = {
            "epoch": trainer.epoch,
            **{k: v / steps_per_epoch for k, v in sums.items()},
            "val_map": val_map,
            "val_group_map": val_report["groups"]["map"],  # type: ignore[index]
            "seconds": round(time.monotonic() - started, 1),
        }
        trainer.history.append(record)
        log.info(
            "epoch %d: loss %.4f, val mAP %.2f (groups %.2f)",
            trainer.epoch,
            record["loss"],
            val_map,
            record["val_group_map"],
        )
        if val_map > trainer.best:
            trainer.best = val_map
            trainer.save("best.pt", {"validation": val_report}, with_optimizer=False)
        trainer.save("last.pt", {"validation": val_report}, with_optimizer=True)
    log.info("best val mAP %.2f; checkpoint %s", trainer.best, cfg.out / "best.pt")
    return cfg.out / "best.pt"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for best.pt and last.pt")
    parser.add_argument("--data", type=Path, default=None, help="data root holding ccp/ (default $FASHION_DATA_DIR)")
    parser.add_argument("--architecture", choices=["attention", "global"], default="attention")
    parser.add_argument("--trunk", default="efficientnet_lite0")
    parser.add_argument(
        "--classification",
        choices=["softmax", "sigmoid"],
        default="softmax",
        help="softmax: the paper's L_cls; sigmoid: per-label BCE",
    )
    parser.add_argument("--steps", type=int, default=9, help="attention steps K")
    parser.add_argument(
        "--scores-from",
        choices=["lstm", "crop"],
        default="lstm",
        help="step scores from the LSTM state or from the crop's own encoding",
    )
    parser.add_argument("--channels", type=int, default=128, help="D")
    defaults = TrainConfig(out=Path("."))
    for name in vars(defaults):
        if name in ("out", "data", "resume"):
            continue
        value = getattr(defaults, name)
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    ccp = ClothingCoParsing(data_dir(args.data) / "ccp")
    train_samples, _ = ccp.split()  # the test split is never seen here
    model_cfg = ModelConfig(
        labels=ccp.labels,
        architecture=args.architecture,
        trunk=args.trunk,
        classification=args.classification,
        steps=args.steps,
        scores_from=args.scores_from,
        channels=args.channels,
    )
    train_fields = {k: getattr(args, k) for k in vars(defaults) if k not in ("out", "data")}
    train(model_cfg, TrainConfig(out=args.out, data=args.data, **train_fields), train_samples)


if __name__ == "__main__":
    main()
