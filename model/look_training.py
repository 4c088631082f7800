"""Train the look head (model.look) instance-level on the product set's photos, and choose its
settings on validation.

    python -m model.look_training --checkpoint checkpoints/attention/best.pt \
        --products $FASHION_DATA_DIR/fashion-product --out checkpoints/attention/look.pt

Every product is seen as the catalogue shows it; each training product is also re-shot
``reshots`` times (model.framing.reshoot: cropped, turned, in perspective, on a street region of a
CCP training photo, small, compressed), each validation product once. Each view is pooled once
where its product is (model.look.pooled_crop_features) under the frozen attention: a catalogue
photo at the crop of its category and as a whole, a re-shot photo at the part a shopper's query
would have (the crop of its group's most probable label). The projection is then trained with
InfoNCE: a re-shot view must find its own catalogue photo (pooled at ``region``) among the batch's
products, and back. The held-out tenth is never trained on or chosen with.

The training region, the input dropout, how the indexed product's look mixes its whole photo's and
its crop's (``whole_share``) and the colour's weight are ``LookConfig``'s, chosen on validation by
bench/look_validation.py: the validation products' re-shot retrieval (the exact product's rank in
the whole catalogue's index of its category) and, on the CCP validation photos, the colour
agreement and the share of a group's answers its most returned product takes.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from model.checkpoint import load_checkpoint, resave_checkpoint
from model.data import ClothingCoParsing, data_dir
from model.errors import run_command
from model.features import trunk_runner
from model.framing import reshoot, street_region
from model.imaging import decode_image, letterbox, to_input
from model.labels import group_of
from model.look import WHOLE, LookHead, colour_histogram, mix_product_look, palette, pooled_crop_features
from model.network import PartAttentionNetwork
from model.products import SPLITS, Product, read_products, split_products
from model.progress import configure_logging, progress

log = logging.getLogger("model.look_training")

REGIONS = ("crop", "whole")  # where a catalogue photo is pooled: its category's crop, or all of it
VIEWS_FORMAT = 1  # bump when a view's pixels or features change (model.framing.reshoot, model.look)
VALIDATION_VIEW = 100  # the re-shot view number of the validation products (apart from the training ones')


@dataclass(frozen=True)
class ViewSpec:
    product: int  # row in read_products
    reshot: int  # -1: the catalogue photo; else which re-shot view
    street: Path | None = None  # the street photo a re-shot view is set on


class ViewImages(Dataset[tuple[torch.Tensor, int]]):
    def __init__(self, products: list[Product], specs: list[ViewSpec], size: tuple[int, int], seed: int) -> None:
        self.products, self.specs, self.size, self.seed = products, specs, size, seed

    def __len__(self) -> int:
        return len(self.specs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        spec = self.specs[i]
        photo = decode_image(self.products[spec.product].image)
        if spec.reshot >= 0:
            assert spec.street is not None
            rng = np.random.default_rng([self.seed, spec.product, spec.reshot])
            with Image.open(spec.street) as street:
                photo = reshoot(photo, street_region(street.convert("RGB"), rng), rng)
        return to_input(letterbox(photo, self.size)[0]), i


@dataclass
class ViewFeatures:
    """Pooled trunk features and colours of views: at their product's crop, and of the whole photo."""

    crop: np.ndarray  # (N, F) float16
    whole: np.ndarray  # (N, F)
    crop_colour: np.ndarray  # (N, P) float32
    whole_colour: np.ndarray  # (N, P)


def product_crop(
    model: PartAttentionNetwork, step_scores: torch.Tensor, product: Product, reshot: bool
) -> torch.Tensor:
    """Which step's crop holds the product: its category's, for a catalogue photo; for a re-shot
    one, the crop a shopper's query part would have (its group's most probable label's)."""
    labels = model.config.labels
    if product.category not in labels:  # in no part index: any crop will do
        return torch.tensor(0)
    if not reshot:
        return step_scores[:, labels.index(product.category)].argmax()
    members = [c for c, name in enumerate(labels) if group_of(name) == group_of(product.category)]
    best = max(members, key=lambda c: float(step_scores[:, c].max()))
    return step_scores[:, best].argmax()


@torch.inference_mode()
def view_features(
    model: PartAttentionNetwork,
    products: list[Product],
    specs: list[ViewSpec],
    cache: Path,
    seed: int,
    workers: int = 2,
    skin_weight: float = 1.0,
) -> ViewFeatures:
    """Each view's pooled features and colours (skin-coloured pixels weighted by ``skin_weight``,
    model.look.colour_histogram), computed once (cached in ``cache``)."""
    if cache.is_file():
        stored = np.load(cache)
        if len(stored["crop"]) == len(specs):  # else written for other views: computed again
            return ViewFeatures(**{name: stored[name] for name in ("crop", "whole", "crop_colour", "whole_colour")})
    size = (model.config.image_height, model.config.image_width)
    run = trunk_runner(model)
    anchors = palette()
    loader = DataLoader(ViewImages(products, specs, size, seed), batch_size=32, num_workers=workers)
    out: dict[str, list[np.ndarray]] = {"crop": [], "whole": [], "crop_colour": [], "whole_colour": []}
    for images, rows in progress(loader, len(loader), f"look features of {len(specs)} views", "batches"):
        maps = [torch.from_numpy(level).float() for level in run(images)]
        head = model.head_forward(maps)
        assert head.step_scores is not None and head.transforms is not None
        steps = torch.stack(
            [
                product_crop(model, head.step_scores[b], products[specs[int(r)].product], specs[int(r)].reshot >= 0)
                for b, r in enumerate(rows)
            ]
        )
        crops = head.transforms[torch.arange(len(rows)), steps][:, None]  # (B, 1, 4)
        whole = torch.tensor(WHOLE).expand(len(rows), 1, 4)
        regions = torch.cat([crops, whole], 1)
        pooled = pooled_crop_features(maps, regions)
        colours = colour_histogram(images, regions, anchors, skin_weight)
        out["crop"].append(pooled[:, 0].half().numpy())
        out["whole"].append(pooled[:, 1].half().numpy())
        out["crop_colour"].append(colours[:, 0].numpy())
        out["whole_colour"].append(colours[:, 1].numpy())
    features = ViewFeatures(**{name: np.concatenate(values) for name, values in out.items()})
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, **dataclasses.asdict(features))
    tmp.replace(cache)
    return features


@dataclass
class LookConfig:
    reshots: int = 6  # re-shot views of each training product (chosen on validation among 2 and 6)
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.05  # chosen on validation among 1e-4 and 0.05
    temperature: float = 0.05  # InfoNCE's
    look_dim: int = 256
    hidden: int = 512  # 1024 would take the committed checkpoint past its 20 MB
    seed: int = 0
    # Chosen on validation (bench/look_validation.py): where a catalogue photo is pooled as the
    # training anchor ("whole" since 2026-12-07, with the attention of that day's model,
    # reports/look_validation_refit.json; "crop" was chosen with the one before); the dropout of the
    # standardised pooled features while training; the indexed product's look: its whole photo's
    # and its crop's mixed, the whole with this share (model.look.mix_product_look); the colour
    # histogram's share of the look vector.
    region: str = "whole"
    input_dropout: float = 0.0  # 0.3 won on validation and lost on test (reports/look_candidate_dropout.json)
    whole_share: float = 0.6  # 1.0 before 2026-12-07, seventh session: reports/look_validation_whole_share.json
    colour_weight: float = 0.45
    skin_weight: float = 1.0  # a skin-coloured pixel's weight in the colour histograms (model.look)


def info_nce(positives: torch.Tensor, anchors: torch.Tensor, index: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE: each positive (a re-shot view) must pick its own anchor (its product's
    catalogue photo, row ``index``) among the batch's anchors, and each anchor its own positives
    (all of its views in the batch) among the batch's positives."""
    logits = positives @ anchors.t() / temperature  # (n, U)
    forward = F.cross_entropy(logits, index)
    own = F.one_hot(index, len(anchors)).bool()
    back = -torch.logsumexp(logits.log_softmax(0).masked_fill(~own, float("-inf")), 0).mean()
    return (forward + back) / 2


def train_projection(
    head: LookHead, anchors: torch.Tensor, positives: torch.Tensor, owner: torch.Tensor, cfg: LookConfig
) -> list[float]:
    """Train ``head``'s projection: ``positives`` (re-shot views) against ``anchors`` (catalogue
    photos, by product row); ``owner``: each positive's product row. Returns each epoch's loss."""
    torch.manual_seed(cfg.seed)
    norm = head.project[0]
    assert isinstance(norm, torch.nn.BatchNorm1d)
    seen = torch.cat([anchors[owner.unique()], positives]).float()  # standardised by both sides' statistics
    assert norm.running_mean is not None and norm.running_var is not None
    with torch.no_grad():
        norm.running_mean.copy_(seen.mean(0))
        norm.running_var.copy_(seen.var(0))
    optimiser = torch.optim.AdamW(head.project.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * int(np.ceil(len(positives) / cfg.batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, cfg.lr, total_steps=steps, pct_start=0.1)
    history = []
    head.train()
    norm.eval()  # a fixed standardisation: the anchors' and the positives' batches are not alike
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(positives))
        total, batches = 0.0, 0
        for i in range(0, len(order), cfg.batch_size):
            rows = order[i : i + cfg.batch_size]
            products, index = owner[rows].unique(return_inverse=True)
            loss = info_nce(
                head.embed(positives[rows].float(), cfg.input_dropout),
                head.embed(anchors[products].float(), cfg.input_dropout),
                index,
                cfg.temperature,
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total, batches = total + float(loss.detach()), batches + 1
        history.append(total / batches)
        log.info("look epoch %d: InfoNCE %.4f", epoch + 1, history[-1])
    head.eval()
    return history


def ranks(queries: np.ndarray, catalogue: np.ndarray, truth: np.ndarray, pools: list[np.ndarray]) -> np.ndarray:
    """The rank (0: first) of each query's own product ``truth`` among its ``pools`` (catalogue rows)."""
    out = np.empty(len(queries), dtype=np.int64)
    for i, (query, pool) in enumerate(zip(queries, pools, strict=True)):
        similarity = catalogue[pool] @ query
        own = similarity[np.flatnonzero(pool == truth[i])[0]]
        out[i] = int((similarity > own).sum())
    return out


def look_vectors(
    head: LookHead, features: np.ndarray, colours: np.ndarray, colour_weight: float, chunk: int = 4096
) -> np.ndarray:
    """Look vectors of pooled features and colours at a colour weight (model.look.LookHead.combine)."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(features), chunk):
            learnt = head.embed(torch.from_numpy(features[i : i + chunk]).float())
            colour = torch.from_numpy(colours[i : i + chunk]).float()
            out.append(torch.cat([learnt * np.sqrt(1 - colour_weight), colour * np.sqrt(colour_weight)], -1).numpy())
    return np.concatenate(out)


def label_pools(products: list[Product]) -> dict[str, np.ndarray]:
    """Catalogue rows by label: each label's index holds the products of that category."""
    pools: dict[str, list[int]] = {}
    for row, product in enumerate(products):
        pools.setdefault(product.category, []).append(row)
    return {label: np.asarray(rows) for label, rows in pools.items()}


def catalogue_side(catalogue: ViewFeatures, region: str) -> tuple[np.ndarray, np.ndarray]:
    """The features and colours of a catalogue photo pooled at ``region``: its category's crop, or the whole photo."""
    return (catalogue.crop, catalogue.crop_colour) if region == "crop" else (catalogue.whole, catalogue.whole_colour)


def catalogue_looks(head: LookHead, catalogue: ViewFeatures, *, colour_weight: float, whole_share: float) -> np.ndarray:
    """The look vectors the catalogue photos are indexed by, as indexer.embed.product_vector makes them."""
    whole, crop = (
        torch.from_numpy(look_vectors(head, *catalogue_side(catalogue, region), colour_weight))
        for region in ("whole", "crop")
    )
    return mix_product_look(whole, crop, whole_share).numpy()


def retrieval(
    head: LookHead,
    catalogue_vectors: np.ndarray,
    queries: ViewFeatures,
    truth: np.ndarray,
    products: list[Product],
    colour_weight: float,
) -> dict[str, float]:
    """Re-shot retrieval: r1, r10 of the own product in its category's index (``catalogue_vectors``:
    catalogue_looks at the same colour weight)."""
    query_vectors = look_vectors(head, queries.crop, queries.crop_colour, colour_weight)
    pools = label_pools(products)
    found = ranks(query_vectors, catalogue_vectors, truth, [pools[products[t].category] for t in truth])
    return {"r1": float(np.mean(found < 1)), "r10": float(np.mean(found < 10)), "queries": len(found)}


def fit_look_head(
    model: PartAttentionNetwork,
    features: dict[str, ViewFeatures],
    train_owner: torch.Tensor,
    cfg: LookConfig,
    region: str,
    cache: Path | None = None,
) -> tuple[LookHead, list[float]]:
    """A look head whose projection is trained on the views' ``features`` ("catalogue": every
    product's, "train": the training products' re-shot views, owned by ``train_owner``). With
    ``cache`` (a file named by the views' and the settings' keys), a head trained once (while
    choosing its settings) is not trained again."""
    config = dataclasses.replace(model.config, look_dim=cfg.look_dim, look_hidden=cfg.hidden)
    trunk_channels = [int(level.shape[1]) for level in model.trunk_forward(torch.zeros(1, 3, 64, 64))]
    head = LookHead(config, trunk_channels)
    if cache is not None and cache.is_file():
        stored = torch.load(cache, map_location="cpu", weights_only=True)
        head.project.load_state_dict(stored["project"])
        return head.eval(), [float(v) for v in stored["history"]]
    anchors = torch.from_numpy(catalogue_side(features["catalogue"], region)[0])
    history = train_projection(head, anchors, torch.from_numpy(features["train"].crop), train_owner, cfg)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"project": head.project.state_dict(), "history": history}, cache)
    return head, history


def head_cache(cache: Path, key: str, cfg: LookConfig, region: str) -> Path:
    """Where a trained head is kept: by its views' key and every training setting (not the
    indexing-time ones, colour weight, whole share and skin weight)."""
    settings = dataclasses.asdict(dataclasses.replace(cfg, region=region, colour_weight=0.0))
    del settings["whole_share"], settings["skin_weight"]  # the keys of heads trained before these existed hold
    if not settings["input_dropout"]:
        del settings["input_dropout"]
    return cache / f"head-{key}-{zlib.crc32(repr(sorted(settings.items())).encode()):08x}.pt"


@dataclass
class LookData:
    """The product set's views for training and choosing the look head, and their features."""

    products: list[Product]
    train_rows: list[int]
    val_rows: list[int]
    features: dict[str, ViewFeatures]  # "catalogue", "train", "validation"
    train_owner: torch.Tensor  # the product row of each training view
    key: str  # the checkpoint's and the views' (names the caches)

    @property
    def val_truth(self) -> np.ndarray:
        return np.asarray(self.val_rows)


def look_data(
    model: PartAttentionNetwork,
    checkpoint: Path,
    root: Path,
    streets: Sequence[Path],
    cfg: LookConfig,
    cache: Path,
    workers: int,
) -> LookData:
    """Every product's catalogue view; the training products re-shot ``cfg.reshots`` times and the
    validation products once, on regions of the ``streets`` photos; their features (cached by the
    checkpoint's content). ``cfg.reshots`` 0: no training views (scoring a fitted head needs none)."""
    products = read_products(root)
    splits = split_products(len(products))
    train_rows, val_rows = (
        [int(r) for r in sorted(splits[SPLITS.index(name)]) if products[int(r)].category in model.config.labels]
        for name in ("train", "validation")
    )

    def street(product: int, view: int) -> Path:
        return streets[zlib.crc32(f"{product}-{view}".encode()) % len(streets)]

    # The views depend on the model, the products and their split, the streets and the seed.
    views = repr(([p.id for p in products], train_rows, val_rows, [str(s) for s in streets], cfg.seed)).encode()
    # The skin weight changes the views' colours, not their pooled features: a head trained on one
    # is the head of the other (its cache is named by ``key`` alone).
    colours = "" if cfg.skin_weight == 1 else f"-skin{cfg.skin_weight:g}"
    key = f"{zlib.crc32(checkpoint.read_bytes()):08x}-{zlib.crc32(views):08x}-{VIEWS_FORMAT}"

    def features_of(views: list[ViewSpec], name: str) -> ViewFeatures:
        file = cache / f"{name}-{key}{colours}.npz"
        return view_features(model, products, views, file, cfg.seed, workers, cfg.skin_weight)

    # The training views are cached one re-shot number at a time, so that asking for more re-shots
    # computes only the new ones.
    catalogue = features_of([ViewSpec(row, -1) for row in range(len(products))], "catalogue")
    train = [
        features_of([ViewSpec(row, v, street(row, v)) for row in train_rows], f"train-view{v}")
        for v in range(cfg.reshots)
    ] or [ViewFeatures(**{f.name: getattr(catalogue, f.name)[:0] for f in dataclasses.fields(ViewFeatures)})]
    features = {
        "catalogue": catalogue,
        "train": ViewFeatures(
            **{f.name: np.concatenate([getattr(t, f.name) for t in train]) for f in dataclasses.fields(ViewFeatures)}
        ),
        "validation": features_of(
            [ViewSpec(row, VALIDATION_VIEW, street(row, VALIDATION_VIEW)) for row in val_rows], "validation"
        ),
    }
    owner = torch.tensor([row for _ in range(cfg.reshots) for row in train_rows], dtype=torch.long)  # view-major
    return LookData(products, train_rows, val_rows, features, owner, key)


def add_look_head(
    checkpoint: Path, out: Path, model: PartAttentionNetwork, head: LookHead, cfg: LookConfig, report: dict[str, Any]
) -> Path:
    """Write ``checkpoint``'s model with ``head`` as its look head to ``out`` (its other contents kept)."""
    _, payload = load_checkpoint(checkpoint)
    config = dataclasses.replace(
        model.config,
        look_dim=cfg.look_dim,
        look_hidden=cfg.hidden,
        look_colour_weight=cfg.colour_weight,
        look_whole_share=cfg.whole_share,
        look_skin_weight=cfg.skin_weight,
    )
    with_look = PartAttentionNetwork(dataclasses.replace(config, pretrained=False, trunk_weights=None))
    with_look.load_state_dict(model.state_dict(), strict=False)
    assert with_look.look is not None
    with_look.look.project.load_state_dict(head.project.state_dict())
    with_look.config = config
    return resave_checkpoint(out, with_look.eval(), payload, {**payload.get("metrics", {}), "look": report})


def street_photos(data: Path | None = None) -> list[Path]:
    """The street photos products are re-shot on: CCP's training photos (never its test photos)."""
    ccp = ClothingCoParsing(data_dir(data) / "ccp")
    return sorted(s.image for s in ccp.training_photos()[0])


def add_trained_look_head(
    checkpoint: Path,
    products: Path,
    data: Path | None = None,
    cache: Path = Path(".cache/look"),
    workers: int = 2,
    out: Path | None = None,
    cfg: LookConfig | None = None,
) -> Path:
    """Train the look head of ``checkpoint``'s model on the product set and write it into
    ``out`` (default: the checkpoint itself), with its validation figures."""
    cfg = cfg or LookConfig()
    model, _ = load_checkpoint(checkpoint)
    looks = look_data(model, checkpoint, products, street_photos(data), cfg, cache, workers)
    head, history = fit_look_head(
        model, looks.features, looks.train_owner, cfg, cfg.region, head_cache(cache, looks.key, cfg, cfg.region)
    )
    catalogue = catalogue_looks(
        head, looks.features["catalogue"], colour_weight=cfg.colour_weight, whole_share=cfg.whole_share
    )
    reshot = retrieval(
        head, catalogue, looks.features["validation"], looks.val_truth, looks.products, cfg.colour_weight
    )
    log.info("validation products, re-shot: r1 %.3f, r10 %.3f", reshot["r1"], reshot["r10"])
    report = {"settings": dataclasses.asdict(cfg), "history": history, "validation_reshot": reshot}
    return add_look_head(checkpoint, out or checkpoint, model, head, cfg, report)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--products", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="the checkpoint with its look head (default: in place)")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/look"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    configure_logging()
    add_trained_look_head(args.checkpoint, args.products, args.data, args.cache_dir, args.workers, args.out)


if __name__ == "__main__":
    sys.exit(run_command(main))
