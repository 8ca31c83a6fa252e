"""Train paper B's depth/RGB re-ID embedders: step I, step II distillation, or a baseline.

Examples::

    # step I: a depth embedder on the simulator's re-ID crops (batch-hard triplet)
    python training/train_reid.py --config training/configs/reid/cpu_sim_depth.yaml
    # step II: distil it into an RGB network (depth -> RGB, the paper's winner)
    python training/train_reid.py --config training/configs/reid/cpu_sim_distill.yaml \
        --set step.teacher=out/train/reid/cpu_sim_depth/model.pt
    # the one-stream baseline, and a resumed run:
    python training/train_reid.py --config training/configs/reid/cpu_sim_depth.yaml \
        --set step.kind=one_stream --out out/train/reid/one_stream
    python training/train_reid.py --resume out/train/reid/cpu_sim_depth/last.pt
    # fine-tuning the shipped depth embedder on new people (runtime.init_checkpoint):
    python training/train_reid.py --config training/configs/reid/cpu_sim_depth_finetune.yaml \
        --data out/sim/reid_new
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from common import (
    CsvLog,
    DistInfo,
    TrainingError,
    barrier,
    build_dataclass,
    check_counts,
    check_sections,
    checkpoint_extra,
    is_finite,
    plot_curves,
    repo_file,
    run_trainer,
    section_values,
    step_lr,
    trainer_args_parser,
)
from iphd.checkpoints import read_payload, require_training_state
from iphd.data.reid import METRIC_WINDOW_M, ReidRecord
from iphd.detection.backbone import load_torchvision_state_dict
from iphd.errors import CheckpointError, ConfigError, DatasetError
from iphd.eval.reid_metrics import ReidEvalResult, cross_modal_eval, evaluate_both_directions
from iphd.reid.data import (
    BIWI_SUBSETS,
    BiwiRgbdIdSource,
    CropSource,
    OpenReidSource,
    SimReidSource,
    record_ids,
    select,
)
from iphd.reid.distill import (
    SINGLE_MODALITIES,
    build_baseline,
    make_student,
    paired_distillation_loss,
    zero_pad,
)
from iphd.reid.extractor import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CropNormalizeConfig,
    FeatureExtractor,
    load_embedder,
    normalize_crop,
    save_embedder,
)
from iphd.reid.losses import batch_hard_triplet_loss, cross_entropy_label_smooth
from iphd.reid.model import Embedder, EmbedderConfig
from iphd.reid.sampler import PKSampler

SECTIONS = ("model", "normalize", "augment", "data", "step", "optim", "runtime")
STEP_KINDS = ("single", "distill", "one_stream", "zero_padding")
DIRECTIONS = {"depth->rgb": ("depth", "rgb"), "rgb->depth": ("rgb", "depth")}
SOURCES = ("sim", "biwi", "openreid")
DATA_DEFAULTS: dict[str, Any] = {
    "source": "sim",  # sim (iphd.data.reid layout), biwi (BIWI RGBD-ID frames) or openreid
    "root": None,  # dataset folder
    # sim: train | test; biwi: a subset or list of Training, Still, Walking; openreid: a subset
    # of splits.json (trainval, train, val, query, gallery) or null for every crop
    "train_split": "train",
    "train_pids": None,  # keep only these identities of the training split; null = all
    "val_split": None,  # a split of the source to validate on; null = hold out val_identities
    "val_identities": 4,  # with val_split null: training identities held out; 0 = no validation
    "cam_modality": {0: "rgb", 1: "depth"},  # openreid: camera number -> modality
    "limit": None,  # use only the first N training crops (N pairs in step II; smoke tests)
    "trials": 10,  # gallery draws of the single-gallery-shot validation
}
STEP_DEFAULTS: dict[str, Any] = {
    "kind": "single",  # single (step I), distill (step II), one_stream or zero_padding baselines
    "modality": "depth",  # single: the modality step I trains on
    "loss": "triplet",  # single and baselines: triplet (batch-hard) or softmax (label-smoothed)
    "margin": 0.5,  # triplet margin (paper B)
    "label_smoothing": 0.1,  # softmax label smoothing epsilon
    "p": 16,  # triplet: identities per batch (paper B: P = 16)
    "k": 4,  # triplet: crops per identity (paper B: K = 4)
    "teacher": None,  # distill: the step-I checkpoint (its model.pt)
    "direction": "depth->rgb",  # distill: teacher modality -> student modality
    "freeze_from": "layer3",  # distill: first frozen block of the student (paper B: layer3)
}
AUGMENT_DEFAULTS: dict[str, Any] = {
    "flip": True,  # random horizontal flip (a pair's two crops flip together)
    "shift": 0.05,  # random translation up to this fraction of the crop size, zero filled
    # depth: probability of showing the person cut by an image side edge, as the tracker's crop
    # of someone entering the view is (20-70 % of the body hidden, window on the visible part)
    "edge_cut": 0.0,
}
OPTIM_DEFAULTS: dict[str, Any] = {
    "optimizer": None,  # sgd (Nesterov) or adam; null = paper B's: sgd for softmax, else adam
    "epochs": 60,
    "batch_size": 64,  # per process, softmax and distill (triplet batches are P x K)
    "lr": 3.5e-4,
    "momentum": 0.9,  # sgd
    "weight_decay": 5.0e-4,
    "milestones": [40],  # epochs at which the lr is multiplied by gamma
    "gamma": 0.1,
    "warmup_iters": 0,
    "patience": 10,  # stop after this many validations without a better mAP; null = never
    "max_iters": None,  # stop after this many iterations (smoke tests)
}
RUNTIME_DEFAULTS: dict[str, Any] = {
    "out": None,  # output folder; default out/train/reid/<config name>
    "device": "auto",  # auto, cpu or cuda
    "workers": 4,  # data-loading processes per training process
    "seed": 0,
    "threads": None,  # torch CPU threads; null = torch's default
    "log_every": 20,  # iterations between CSV rows
    "val_every": 1,  # epochs between validations
    "backbone_weights": None,  # torchvision-format ResNet state dict (ImageNet initialisation)
    # step I: start from a trained embedder of the same architecture (fine-tuning on new
    # people); the classifier is new, sized for this data's identities. Step II: start the
    # student's trainable blocks from a trained student (the shipped reid_rgb.pt); the frozen
    # blocks stay the teacher's
    "init_checkpoint": None,
}
LOG_COLUMNS = ("epoch", "iteration", "lr", "loss", "val_map", "val_rank1", "val_map_d2r",
               "val_map_r2d", "seconds")


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of the re-ID trainer."""
    parser: argparse.ArgumentParser = trainer_args_parser(
        __doc__.split("\n", 1)[0], "training/configs/reid/", "step.loss=softmax"
    )
    return parser


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one training run is built from."""

    model: EmbedderConfig  # step II: the teacher's
    normalize: CropNormalizeConfig  # step II: the teacher's
    augment: dict[str, Any]
    data: dict[str, Any]
    step: dict[str, Any]
    optim: dict[str, Any]
    runtime: dict[str, Any]
    raw: dict[str, Any]  # the merged YAML, stored in every checkpoint


def _choice(section: str, key: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ConfigError(
            f"{section}.{key} must be one of {', '.join(map(str, allowed))}, got {value!r}"
        )


def _check_split(key: str, value: Any, source: str) -> None:
    """Refuse a split the source cannot open: one name, or for BIWI a list of its subsets.

    Raises:
        ConfigError: naming the key, the value and what to write for this source.
    """
    if value is None and (key == "val_split" or source == "openreid"):
        return  # no validation split (held-out identities) / every crop of the layout
    if isinstance(value, str) and value:
        return
    if source == "biwi" and isinstance(value, list) and value and all(
        isinstance(item, str) and item for item in value
    ):
        return
    want = {
        "sim": "one split name, e.g. train",
        "biwi": f"a subset or a list of subsets of {', '.join(BIWI_SUBSETS)}",
        "openreid": "one subset of splits.json (trainval, train, val, query, gallery) or null "
                    "for every crop",
    }[source]
    raise ConfigError(f"data.{key} with data.source {source} must be {want}, got {value!r}")


def build_run_config(raw: dict[str, Any], name: str) -> RunConfig:
    """Check a merged config, fill in defaults and, for step II, read the teacher's configs.

    Raises:
        ConfigError: unknown sections or keys, invalid values, no dataset root, or a teacher
            that does not fit the requested direction.
        CheckpointError: the teacher checkpoint is missing or unreadable.
    """
    check_sections(raw, SECTIONS)
    data = section_values(raw, "data", DATA_DEFAULTS, untyped=("train_split", "val_split"))
    step = section_values(raw, "step", STEP_DEFAULTS)
    augment = section_values(raw, "augment", AUGMENT_DEFAULTS)
    optim = section_values(raw, "optim", OPTIM_DEFAULTS)
    runtime = section_values(raw, "runtime", RUNTIME_DEFAULTS)
    _choice("step", "kind", step["kind"], STEP_KINDS)
    _choice("step", "loss", step["loss"], ("triplet", "softmax"))
    _choice("data", "source", data["source"], SOURCES)
    for key in ("train_split", "val_split"):
        _check_split(key, data[key], data["source"])
    _choice("optim", "optimizer", optim["optimizer"], (None, "sgd", "adam"))
    if not data["root"]:
        raise ConfigError("no dataset: set data.root (or --data) to the re-ID dataset folder")
    if int(optim["epochs"]) < 1 or int(optim["batch_size"]) < 1:
        raise ConfigError("optim.epochs and optim.batch_size must be >= 1")
    if float(optim["lr"]) <= 0:
        raise ConfigError(f"optim.lr must be > 0, got {optim['lr']}")
    check_counts(optim, runtime)
    if int(step["p"]) < 2 or int(step["k"]) < 2:
        raise ConfigError("step.p and step.k must be >= 2 (a triplet needs a positive and a "
                          "negative)")
    if int(data["val_identities"]) < 0 or int(data["trials"]) < 1:
        raise ConfigError("data.val_identities must be >= 0 and data.trials >= 1")
    if optim["patience"] is not None and int(optim["patience"]) < 1:
        raise ConfigError(f"optim.patience must be >= 1 or null, got {optim['patience']}")
    if not 0.0 <= float(augment["shift"]) < 0.5:
        raise ConfigError(f"augment.shift must be in [0, 0.5), got {augment['shift']}")
    if not 0.0 <= float(augment["edge_cut"]) <= 1.0:
        raise ConfigError(f"augment.edge_cut must be a probability in [0, 1], got "
                          f"{augment['edge_cut']}")
    if runtime["init_checkpoint"] and step["kind"] not in ("single", "distill"):
        raise ConfigError(
            f"runtime.init_checkpoint starts step I (step.kind single) from a trained embedder, "
            f"or step II's student (distill) from a trained one; step.kind {step['kind']} "
            "cannot take it"
        )
    if step["kind"] == "distill":
        model, normalize = _teacher_configs(raw, step)
    else:
        _choice("step", "modality", step["modality"], SINGLE_MODALITIES)
        model = _model_config(raw)
        normalize = build_dataclass(CropNormalizeConfig, raw.get("normalize"), "normalize")
    if float(augment["edge_cut"]) > 0.0 and normalize.depth_crop != "metric":
        raise ConfigError(
            "augment.edge_cut imitates the tracker's metric crops of people at an image edge; "
            f"with normalize.depth_crop {normalize.depth_crop} set it to 0"
        )
    if runtime["out"] is None:
        runtime["out"] = str(Path("out/train/reid") / name)
    return RunConfig(model, normalize, augment, data, step, optim, runtime, raw)


def _teacher_configs(
    raw: dict[str, Any], step: dict[str, Any]
) -> tuple[EmbedderConfig, CropNormalizeConfig]:
    _choice("step", "direction", step["direction"], tuple(DIRECTIONS))
    if not step["teacher"]:
        raise ConfigError("step.kind distill needs step.teacher: the step-I checkpoint (model.pt)")
    teacher, normalize, _ = load_embedder(step["teacher"])
    wanted = DIRECTIONS[step["direction"]][0]
    if teacher.config.modality != wanted:
        raise ConfigError(
            f"step.teacher {step['teacher']} embeds {teacher.config.modality} crops, but "
            f"step.direction {step['direction']} needs a teacher trained on {wanted} (run step I "
            f"with step.modality={wanted}, or set step.direction to match the teacher)"
        )
    # Step II copies the teacher; model/normalize sections may stay (one config for both steps)
    # but must describe the teacher.
    if raw.get("model"):
        config_model = _model_config(raw)
        for field in dataclasses.fields(EmbedderConfig):
            ours, theirs = getattr(config_model, field.name), getattr(teacher.config, field.name)
            if field.name not in ("modality", "num_classes") and ours != theirs:
                raise ConfigError(
                    f"model.{field.name} is {ours!r} but the teacher has {theirs!r}; step II "
                    "copies the teacher's architecture"
                )
    if raw.get("normalize"):
        config_normalize = build_dataclass(CropNormalizeConfig, raw.get("normalize"), "normalize")
        if config_normalize != normalize:
            raise ConfigError(
                "the normalize section differs from the teacher's crop normalisation; step II "
                "uses the teacher's"
            )
    return teacher.config, normalize


def _model_config(raw: dict[str, Any]) -> EmbedderConfig:
    values = dict(raw.get("model") or {})
    if "modality" in values or "num_classes" in values:
        raise ConfigError(
            "model.modality and model.num_classes follow from the step section (step.kind, "
            "step.modality, step.loss and the training identities); remove them"
        )
    return build_dataclass(EmbedderConfig, values, "model")


def open_source(data: dict[str, Any], split: Any, depth_crop: str = "letterbox",
                depth_window_m: tuple[float, float] = METRIC_WINDOW_M) -> CropSource:
    """Open one split of the configured re-ID source (see ``DATA_DEFAULTS``).

    ``depth_crop`` and ``depth_window_m`` are how BIWI's depth crops are cut from its frames;
    the simulator's (and ``bag_to_reid.py``'s) dataset records its own, and open-reid crops
    come cut.

    Raises:
        DatasetError: a missing or malformed dataset, or an unknown split.
    """
    root = Path(data["root"])
    if data["source"] == "sim":
        return SimReidSource(root, str(split))
    if data["source"] == "biwi":
        subsets = [split] if isinstance(split, str) else list(split)
        return BiwiRgbdIdSource(root, subsets, depth_crop=depth_crop,
                                depth_window_m=depth_window_m)
    cams = {int(k): str(v) for k, v in dict(data["cam_modality"]).items()}
    return OpenReidSource(root, cams, subset=split)


def check_depth_crop(source: CropSource, normalize: CropNormalizeConfig) -> None:
    """Refuse a model whose depth crop geometry is not the data's.

    Raises:
        DatasetError: ``source.depth_crop`` differs from ``normalize.depth_crop``, or both are
            ``metric`` with another window (the tracker cuts with the checkpoint's).
    """
    if source.depth_crop != normalize.depth_crop:
        raise DatasetError(
            f"the data's depth crops are {source.depth_crop} but the model is set up for "
            f"{normalize.depth_crop} crops; set normalize.depth_crop: {source.depth_crop} (or "
            f"regenerate the data with iphd-sim reid --depth-crop {normalize.depth_crop})"
        )
    if normalize.depth_crop == "metric" and not np.allclose(source.depth_window_m,
                                                            normalize.depth_window_m):
        data_text = ", ".join(f"{float(v):g}" for v in source.depth_window_m)
        model_text = ", ".join(f"{float(v):g}" for v in normalize.depth_window_m)
        raise DatasetError(
            f"the data's metric depth crops are {data_text} m windows but the model is set up "
            f"for {model_text} m (normalize.depth_window_m, which the tracker cuts with); set "
            f"normalize.depth_window_m: [{data_text}]"
        )


@dataclasses.dataclass(frozen=True)
class Splits:
    """Training and validation records of a run (validation may be empty)."""

    train_source: CropSource
    train: tuple[ReidRecord, ...]
    val_source: CropSource
    val: tuple[ReidRecord, ...]


def load_splits(run: RunConfig) -> Splits:
    """Open the training split and pick the validation records (a split or held-out ids).

    Raises:
        DatasetError: no training crops, or fewer identities than validation needs.
    """
    data = run.data
    window = run.normalize.depth_window_m
    source = open_source(data, data["train_split"], run.normalize.depth_crop, window)
    check_depth_crop(source, run.normalize)
    records = source.records
    if data["train_pids"] is not None:
        records = select(records, pids=[int(p) for p in data["train_pids"]])
    if data["val_split"] is not None:
        val_source = open_source(data, data["val_split"], run.normalize.depth_crop, window)
        check_depth_crop(val_source, run.normalize)
        val = val_source.records
    else:
        val_source = source
        pids = np.unique([r.pid for r in records])
        n_val = int(data["val_identities"])
        if n_val and len(pids) <= n_val:
            raise DatasetError(
                f"the training split has {len(pids)} identities; holding out "
                f"data.val_identities={n_val} for validation leaves none to train on: "
                f"validate on a split of other people (bag_to_reid.py --split test, then "
                f"--set data.val_split=test) or hold out fewer (--set data.val_identities="
                f"{max(1, len(pids) // 4)})"
            )
        held = set(np.random.default_rng(int(run.runtime["seed"])).permutation(pids)[:n_val])
        val = tuple(r for r in records if r.pid in held)
        records = tuple(r for r in records if r.pid not in held)
    if not records:
        raise DatasetError(f"no training crops in {data['root']} split {data['train_split']!r}")
    if val:
        check_validation(run, tuple(val))
    return Splits(source, tuple(records), val_source, tuple(val))


def check_validation(run: RunConfig, val: Sequence[ReidRecord]) -> None:
    """Refuse, before training starts, validation records the first validation cannot score.

    A single-modality step scores queries against crops of the same person from another
    session; a cross-modal one needs people with crops of both modalities.

    Raises:
        DatasetError: naming what is missing and the settings to change.
    """
    fix = ("validate on a split with such people (bag_to_reid.py --split test over bags of "
           "the same people, then --set data.val_split=test) or hold out training identities "
           "instead (--set data.val_split=null --set data.val_identities=4)")
    if run.data["source"] == "biwi":
        # A BIWI sequence is one person in one session: two subsets give each person two.
        fix = ('train on two BIWI subsets, so that each person is seen in two sessions, and '
               'hold out identities of them (--set "data.train_split=[Training, Still]" '
               "--set data.val_split=null --set data.val_identities=4)")
    where = (f"split {run.data['val_split']!r}" if run.data["val_split"] is not None
             else f"the {run.data['val_identities']} identities held out")
    if run.step["kind"] == "single":
        sessions: dict[int, set[str]] = {}
        for r in val:
            if r.modality == run.step["modality"]:
                sessions.setdefault(r.pid, set()).add(r.session)
        if not any(len(s) > 1 for s in sessions.values()):
            raise DatasetError(
                f"the validation crops ({where}) have no person seen in two sessions in "
                f"{run.step['modality']}, so validation cannot score the model; {fix}"
            )
    else:
        depth = {r.pid for r in val if r.modality == "depth"}
        rgb = {r.pid for r in val if r.modality == "rgb"}
        if not depth & rgb:
            raise DatasetError(
                f"the validation crops ({where}) have no person with both depth and RGB "
                f"crops, so cross-modal validation cannot score the model; {fix}"
            )


def augment_crop(crop: np.ndarray, flip: bool, dy: int, dx: int) -> np.ndarray:
    """Flip a raw crop left-right and translate it by (dy, dx) pixels, filling with zeros.

    Works on the stored crop, before normalisation: pixels move without interpolation, so
    invalid (0) depth stays exactly 0 and the uncovered border is invalid depth / black RGB.

    Args:
        crop: (H, W) uint16 depth in mm or (H, W, 3) uint8 RGB.
        flip: mirror left-right.
        dy: rows to move down (negative: up).
        dx: columns to move right (negative: left).
    """
    if flip:
        crop = crop[:, ::-1]
    if dy == 0 and dx == 0:
        return np.ascontiguousarray(crop)
    h, w = crop.shape[:2]
    out = np.zeros_like(crop)
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        crop[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


EDGE_CUT_FRACTION = (0.2, 0.7)  # share of the body's width an edge-cut crop hides
BODY_BAND_MM = 500  # depth band around the person's distance that counts as their body
BODY_MIN_ROWS = 0.3  # share of a column's rows in that band for it to be the body's (not floor)


def edge_cut_crop(crop: np.ndarray, side: int, fraction: float) -> np.ndarray:
    """The metric depth crop the tracker cuts of this person when an image side edge hides part.

    The tracker centres its window on the visible box, and what lies beyond the image is
    invalid (0). This finds the body's columns (at least ``BODY_MIN_ROWS`` of the rows between
    10 % and 80 % of the height within ``BODY_BAND_MM`` of the crop centre's median depth, so
    the floor near the feet does not count), hides ``fraction`` of them on ``side`` (-1 left,
    +1 right) and re-centres the window on the rest. A crop without such a body is returned
    unchanged.

    Args:
        crop: (H, W) uint16 metric depth crop in mm, person centred.
        side: -1 hides the left part, +1 the right part.
        fraction: share of the body's width to hide, in (0, 1).
    """
    h, w = crop.shape
    centre = crop[h // 5: 4 * h // 5, 3 * w // 8: 5 * w // 8]
    valid = centre[centre > 0]
    if not valid.size:
        return crop
    z = float(np.median(valid))
    rows = crop[h // 10: 4 * h // 5].astype(np.int32)
    body = (rows > 0) & (np.abs(rows - z) <= BODY_BAND_MM)
    cols = np.flatnonzero(body.mean(axis=0) >= BODY_MIN_ROWS)
    if cols.size < 2:
        return crop
    x1, x2 = int(cols[0]), int(cols[-1]) + 1
    cut = int(round(x1 + (fraction if side < 0 else 1.0 - fraction) * (x2 - x1)))
    out = crop.copy()
    if side < 0:
        out[:, :cut] = 0
        visible = (cut, x2)
    else:
        out[:, cut:] = 0
        visible = (x1, cut)
    return augment_crop(out, False, 0, int(round(w / 2 - (visible[0] + visible[1]) / 2)))


class _Augmenter:
    """Per-item random flip and shift (and edge cut), repeatable from (seed, epoch, index)."""

    def __init__(self, augment: dict[str, Any] | None, seed: int) -> None:
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def draw(self, index: int, shape: tuple[int, ...]) -> tuple[bool, int, int]:
        if not self.augment:
            return False, 0, 0
        rng = np.random.default_rng((self.seed, self.epoch, index))
        flip = bool(self.augment["flip"]) and bool(rng.random() < 0.5)
        my = int(round(float(self.augment["shift"]) * shape[0]))
        mx = int(round(float(self.augment["shift"]) * shape[1]))
        return flip, int(rng.integers(-my, my + 1)), int(rng.integers(-mx, mx + 1))

    def draw_edge_cut(self, index: int) -> tuple[int, float] | None:
        """(side, fraction) of an edge cut for item ``index``, or None."""
        p = float((self.augment or {}).get("edge_cut", 0.0))
        if p <= 0.0:
            return None
        rng = np.random.default_rng((self.seed, self.epoch, index, 1))
        if rng.random() >= p:
            return None
        return (-1 if rng.random() < 0.5 else 1), float(rng.uniform(*EDGE_CUT_FRACTION))


class CropTrainSet(torch.utils.data.Dataset[tuple[torch.Tensor, int, int]]):
    """Normalised, augmented crops with class labels and modality index (0 depth, 1 RGB)."""

    def __init__(self, source: CropSource, records: Sequence[ReidRecord], labels: Sequence[int],
                 normalize: CropNormalizeConfig, size_hw: tuple[int, int],
                 augment: dict[str, Any] | None, seed: int) -> None:
        self.source = source
        self.records = tuple(records)
        self.labels = list(labels)
        self.normalize = normalize
        self.size_hw = size_hw
        self.augmenter = _Augmenter(augment, seed)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draw."""
        self.augmenter.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        record = self.records[index]
        crop = self.source.load_crop(record)
        cut = self.augmenter.draw_edge_cut(index) if crop.ndim == 2 else None
        if cut is not None:
            crop = edge_cut_crop(crop, *cut)
        crop = augment_crop(crop, *self.augmenter.draw(index, crop.shape))
        x, modality = normalize_crop(crop, self.normalize, self.size_hw)
        return torch.from_numpy(x), self.labels[index], SINGLE_MODALITIES.index(modality)


class PairTrainSet(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Time-paired (teacher-modality crop, student-modality crop), normalised and augmented."""

    def __init__(self, source: CropSource, pairs: Sequence[tuple[ReidRecord, ReidRecord]],
                 normalize: CropNormalizeConfig, size_hw: tuple[int, int],
                 augment: dict[str, Any] | None, seed: int) -> None:
        self.source = source
        self.pairs = tuple(pairs)
        self.normalize = normalize
        self.size_hw = size_hw
        self.augmenter = _Augmenter(augment, seed)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draw."""
        self.augmenter.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        out = []
        flip = None
        for j, record in enumerate(self.pairs[index]):
            crop = self.source.load_crop(record)
            draw_flip, dy, dx = self.augmenter.draw(2 * index + j, crop.shape)
            # Both crops show the same instant, so they mirror together.
            flip = draw_flip if flip is None else flip
            x, _ = normalize_crop(augment_crop(crop, flip, dy, dx), self.normalize, self.size_hw)
            out.append(torch.from_numpy(x))
        return out[0], out[1]


def time_pairs(
    records: Sequence[ReidRecord], first: str, second: str
) -> list[tuple[ReidRecord, ReidRecord]]:
    """(``first``-modality, ``second``-modality) records sharing a pair id, in record order.

    Raises:
        DatasetError: no pair at all (step II needs time-paired crops).
    """
    by_pair: dict[int, dict[str, ReidRecord]] = {}
    for r in records:
        if r.pair_id >= 0:
            by_pair.setdefault(r.pair_id, {}).setdefault(r.modality, r)
    pairs = [(m[first], m[second]) for m in by_pair.values() if first in m and second in m]
    if not pairs:
        raise DatasetError(
            "no time-paired depth/RGB crops (same pair_id) in the training split; step II "
            "distillation needs them"
        )
    return pairs


def embed_records(model: Embedder, normalize: CropNormalizeConfig, source: CropSource,
                  records: Sequence[ReidRecord], device: str) -> np.ndarray:
    """(N, D) L2-normalised inference embeddings of ``records`` (the extractor's path).

    Raises:
        DatasetError: depth records cut another way than ``normalize.depth_crop`` says.
    """
    if any(r.modality == "depth" for r in records):
        check_depth_crop(source, normalize)
    extractor = FeatureExtractor(model, normalize, device=device, batch_size=64)
    return extractor([source.load_crop(r) for r in records])


def evaluate_single(model: Embedder, normalize: CropNormalizeConfig, source: CropSource,
                    records: Sequence[ReidRecord], modality: str, device: str, trials: int,
                    seed: int = 0, single_shot: bool = True) -> ReidEvalResult:
    """Within-modality mAP for step I: every crop queries the others of other sessions.

    Sessions stand in for cameras (same-identity, same-session crops are excluded), so a query
    is matched across recordings as at test time; cross-modal scoring needs step II.

    Raises:
        DatasetError: no identity of the records was seen in two sessions.
    """
    recs = select(records, modality=modality)
    feats = embed_records(model, normalize, source, recs, device)
    pids, _, pairs = record_ids(recs)
    sessions = {s: i for i, s in enumerate(sorted({r.session for r in recs}))}
    cams = np.array([sessions[r.session] for r in recs], dtype=np.int64)
    try:
        return cross_modal_eval(feats, pids, pairs, feats, pids, pairs, query_camids=cams,
                                gallery_camids=cams, trials=trials, seed=seed,
                                single_shot=single_shot)
    except ValueError as exc:
        raise DatasetError(
            f"scoring a single-modality model needs identities seen in two sessions ({exc}); "
            "give crops of people seen in more than one session (validation: another "
            "data.val_split or more data.val_identities)"
        ) from exc


def evaluate_cross(depth_model: Embedder, rgb_model: Embedder,
                   normalize: tuple[CropNormalizeConfig, CropNormalizeConfig],
                   source: CropSource, records: Sequence[ReidRecord], device: str, trials: int,
                   seed: int = 0, single_shot: bool = True) -> dict[str, ReidEvalResult]:
    """Cross-modal scores both ways: depth crops embedded by ``depth_model``, RGB by the other.

    For a one-stream or zero-padding model pass it twice.

    Raises:
        DatasetError: the records have no identity in both modalities.
    """
    depth, rgb = select(records, modality="depth"), select(records, modality="rgb")
    if not depth or not rgb:
        raise DatasetError("cross-modal evaluation needs depth and RGB crops")
    d_feats = embed_records(depth_model, normalize[0], source, depth, device)
    r_feats = embed_records(rgb_model, normalize[1], source, rgb, device)
    d_pids, _, d_pairs = record_ids(depth)
    r_pids, _, r_pairs = record_ids(rgb)
    try:
        return evaluate_both_directions(d_feats, d_pids, d_pairs, r_feats, r_pids, r_pairs,
                                        trials=trials, seed=seed, single_shot=single_shot)
    except ValueError as exc:
        raise DatasetError(f"cross-modal evaluation failed: {exc}") from exc


def _load_resume(path: Path) -> dict[str, Any]:
    payload = read_payload(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "re-ID embedder",
                           "resume from a last.pt written by train_reid.py")
    require_training_state(payload, path, "train_reid.py")
    return payload


@dataclasses.dataclass
class _Setup:
    """The model(s), data and loss of one kind of step."""

    model: Embedder  # the network being trained
    teacher: Embedder | None
    train_set: CropTrainSet | PairTrainSet
    sampler: PKSampler
    describe: str


def _build(run: RunConfig, splits: Splits, info: DistInfo) -> _Setup:
    step, data, optim = run.step, run.data, run.optim
    seed = int(run.runtime["seed"])
    size_hw = run.model.input_size
    limit = data["limit"]
    if step["kind"] == "distill":
        teacher, _, _ = load_embedder(step["teacher"], map_location=info.device)
        first, second = DIRECTIONS[step["direction"]]
        student = make_student(teacher, second, step["freeze_from"])
        pairs = time_pairs(splits.train, first, second)[:limit]
        train_set: CropTrainSet | PairTrainSet = PairTrainSet(
            splits.train_source, pairs, run.normalize, size_hw, run.augment, seed)
        # K = 1 over pair indices: plain shuffled batches, sharded across ranks.
        sampler = PKSampler(np.arange(len(pairs)), min(int(optim["batch_size"]), len(pairs)),
                            1, seed=seed, rank=info.rank, world_size=info.world_size)
        return _Setup(student, teacher, train_set, sampler,
                      f"step II {step['direction']} distillation on {len(pairs)} pairs")
    if step["kind"] == "single":
        records = select(splits.train, modality=step["modality"])
        modality = step["modality"]
    else:
        records = splits.train
        modality = {"one_stream": "both", "zero_padding": "zero-padding"}[step["kind"]]
    records = records[:limit]
    classes = sorted({r.pid for r in records})
    labels = [classes.index(r.pid) for r in records]
    num_classes = len(classes) if step["loss"] == "softmax" else 0
    config = dataclasses.replace(run.model, modality=modality, num_classes=num_classes)
    if step["kind"] == "single":
        model = Embedder(config)
    else:
        model = build_baseline(step["kind"].replace("_", "-"), config)
    train_set = CropTrainSet(splits.train_source, records, labels, run.normalize, size_hw,
                             run.augment, seed)
    if step["loss"] == "triplet":
        sampler = PKSampler(labels, int(step["p"]), int(step["k"]), seed=seed, rank=info.rank,
                            world_size=info.world_size)
    else:
        sampler = PKSampler(np.arange(len(records)), min(int(optim["batch_size"]), len(records)),
                            1, seed=seed, rank=info.rank, world_size=info.world_size)
    name = "step I" if step["kind"] == "single" else f"{step['kind']} baseline"
    return _Setup(model, None, train_set, sampler,
                  f"{name} ({modality}, {step['loss']}) on {len(records)} crops of "
                  f"{len(classes)} identities")


def _collate_crops(batch: list[tuple[torch.Tensor, int, int]]) -> tuple[torch.Tensor, ...]:
    xs, labels, mods = zip(*batch, strict=True)
    return torch.stack(xs), torch.tensor(labels), torch.tensor(mods)


def _collate_pairs(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
    first, second = zip(*batch, strict=True)
    return torch.stack(first), torch.stack(second)


def _step_loss(run: RunConfig, setup: _Setup, net: torch.nn.Module,
               batch: tuple[torch.Tensor, ...], device: torch.device) -> torch.Tensor:
    if setup.teacher is not None:
        x_teacher, x_student = (t.to(device, non_blocking=True) for t in batch)
        return paired_distillation_loss(net, setup.teacher, x_student, x_teacher)
    x, labels, mods = (t.to(device, non_blocking=True) for t in batch)
    if run.step["kind"] == "zero_padding":
        x = zero_pad(x, [SINGLE_MODALITIES[int(m)] for m in mods])
    out = net(x)
    if run.step["loss"] == "softmax":
        return cross_entropy_label_smooth(out.logits, labels, float(run.step["label_smoothing"]))
    return batch_hard_triplet_loss(out.embedding, labels, float(run.step["margin"]))


def _validate(run: RunConfig, setup: _Setup, splits: Splits, device: str) -> dict[str, float]:
    trials = int(run.data["trials"])
    model = setup.model
    if run.step["kind"] == "single":
        result = evaluate_single(model, run.normalize, splits.val_source, splits.val,
                                 run.step["modality"], device, trials)
        metrics = {"val_map": result.mAP, "val_rank1": result.cmc[1]}
    else:
        if setup.teacher is not None:
            first = DIRECTIONS[run.step["direction"]][0]
            models = (setup.teacher, model) if first == "depth" else (model, setup.teacher)
        else:
            models = (model, model)
        results = evaluate_cross(*models, (run.normalize, run.normalize), splits.val_source,
                                 splits.val, device, trials)
        d2r, r2d = results["depth->rgb"], results["rgb->depth"]
        metrics = {"val_map": (d2r.mAP + r2d.mAP) / 2, "val_rank1": (d2r.cmc[1] + r2d.cmc[1]) / 2,
                   "val_map_d2r": d2r.mAP, "val_map_r2d": r2d.mAP}
    model.train()
    return metrics


def _optimizer(run: RunConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    optim = run.optim
    kind = optim["optimizer"] or ("sgd" if run.step["loss"] == "softmax"
                                  and run.step["kind"] != "distill" else "adam")
    lr, wd = float(optim["lr"]), float(optim["weight_decay"])
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(optim["momentum"]),
                               weight_decay=wd, nesterov=True)
    return torch.optim.Adam(params, lr=lr, weight_decay=wd)


def init_from_checkpoint(model: Embedder, run: RunConfig, path: Path) -> None:
    """Start ``model`` from a trained embedder's weights (fine-tuning on new people).

    Step I: everything but the classifier is copied; the classifier stays as built, one output
    per identity of this run's data. Step II (``model`` is a student, frozen from
    ``step.freeze_from``): only the trainable blocks are copied, from a trained student of the
    same modality (the shipped ``reid_rgb.pt``), and the frozen ones stay the new teacher's, so
    a few people's pairs only have to adapt a student that already maps the modality, not
    learn one from the teacher's depth weights.

    Raises:
        CheckpointError: ``path`` is missing or not a re-ID embedder checkpoint.
        ConfigError: the checkpoint's architecture, modality or crop normalisation differs from
            the run's; the message names each differing field.
    """
    trained, normalize, _ = load_embedder(path)
    if run.step["kind"] == "distill" and trained.config.modality != model.config.modality:
        raise ConfigError(
            f"runtime.init_checkpoint {path} embeds {trained.config.modality}, the student "
            f"{model.config.modality}: give a trained {model.config.modality} student (for "
            "depth -> RGB, src/iphd/models/reid_rgb.pt) or drop init_checkpoint"
        )
    differ = [
        f"model.{f.name}: checkpoint {getattr(trained.config, f.name)!r}, config "
        f"{getattr(model.config, f.name)!r}"
        for f in dataclasses.fields(EmbedderConfig)
        if f.name != "num_classes"
        and getattr(trained.config, f.name) != getattr(model.config, f.name)
    ] + [
        f"normalize.{f.name}: checkpoint {getattr(normalize, f.name)!r}, config "
        f"{getattr(run.normalize, f.name)!r}"
        for f in dataclasses.fields(CropNormalizeConfig)
        if getattr(normalize, f.name) != getattr(run.normalize, f.name)
    ]
    if differ:
        raise ConfigError(
            f"runtime.init_checkpoint {path} was trained with another model or crop "
            f"normalisation than this config ({'; '.join(differ)}); use the config it was "
            "trained with (stored in the checkpoint) or drop init_checkpoint to train from scratch"
        )
    if run.step["kind"] == "distill":
        for block in model.trainable_blocks():
            for mine, theirs in zip(model.block_modules(block), trained.block_modules(block),
                                    strict=True):
                mine.load_state_dict(theirs.state_dict())
        return
    weights = {k: v for k, v in trained.state_dict().items() if not k.startswith("classifier.")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    left = [k for k in missing if not k.startswith("classifier.")] + list(unexpected)
    if left:
        raise CheckpointError(f"runtime.init_checkpoint {path}: weights do not fit the model "
                              f"({', '.join(left[:5])}); re-save it with train_reid.py")


def train(run: RunConfig, info: DistInfo, resume: dict[str, Any] | None, quiet: bool) -> Path:
    """Run the training loop; returns the output folder."""
    optim, runtime = run.optim, run.runtime
    out = Path(runtime["out"])
    seed = int(runtime["seed"])
    torch.manual_seed(seed + info.rank)
    if runtime["threads"]:
        torch.set_num_threads(int(runtime["threads"]))
    show = info.is_main and not quiet

    splits = load_splits(run)
    setup = _build(run, splits, info)
    model = setup.model
    if runtime["init_checkpoint"] and resume is None:
        init_from_checkpoint(model, run, repo_file(runtime["init_checkpoint"]))
    elif runtime["backbone_weights"] and resume is None and setup.teacher is None:
        load_torchvision_state_dict(model.backbone, runtime["backbone_weights"])
    model.to(info.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(run, params)
    start_epoch, iteration, best, stale = 0, 0, -1.0, 0
    if resume is not None:
        model.load_state_dict(resume["state_dict"])
        extra = resume["extra"]
        optimizer.load_state_dict(extra["optimizer"])
        start_epoch, iteration = int(extra["epoch"]) + 1, int(extra["iteration"])
        best, stale = float(extra.get("best_map", -1.0)), int(extra.get("stale", 0))
    net: torch.nn.Module = model
    if info.world_size > 1:
        # The triplet loss leaves the BNNeck and classifier without gradient.
        net = DistributedDataParallel(
            model, device_ids=[info.local_rank] if info.device.type == "cuda" else None,
            find_unused_parameters=run.step["kind"] != "distill" and run.step["loss"] == "triplet",
        )
    collate = _collate_pairs if setup.teacher is not None else _collate_crops
    loader = torch.utils.data.DataLoader(
        setup.train_set, batch_sampler=setup.sampler, collate_fn=collate,
        num_workers=int(runtime["workers"]), pin_memory=info.device.type == "cuda",
    )
    validate = info.is_main and bool(splits.val)
    log = CsvLog(out / "log.csv", LOG_COLUMNS) if info.is_main else None
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(run.raw, sort_keys=False),
                                         encoding="utf-8")
        print(f"training {setup.describe}, ResNet-{run.model.backbone_depth} (width "
              f"{run.model.backbone_width}), {info.world_size} process(es) on {info.device}, "
              f"{len(setup.sampler)} iterations/epoch, output {out}", flush=True)
    epochs, max_iters = int(optim["epochs"]), optim["max_iters"]
    patience = optim["patience"]
    started = time.monotonic()
    last_path = out / "last.pt"
    for epoch in range(start_epoch, epochs):
        setup.sampler.set_epoch(epoch)
        setup.train_set.set_epoch(epoch)
        net.train()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not show)
        for batch in bar:
            lr = step_lr(float(optim["lr"]), iteration, len(setup.sampler),
                         int(optim["warmup_iters"]), optim["milestones"], float(optim["gamma"]))
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = _step_loss(run, setup, net, batch, info.device)
            if not is_finite(loss):
                raise TrainingError(
                    f"loss is {float(loss)} at epoch {epoch + 1}, iteration {iteration}; lower "
                    f"optim.lr, and resume from {last_path} if it exists"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            iteration += 1
            if show:
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}", lr=f"{lr:.2g}")
            if log is not None and iteration % int(runtime["log_every"]) == 0:
                log.write({"epoch": epoch + 1, "iteration": iteration, "lr": lr,
                           "loss": float(loss.detach()),
                           "seconds": round(time.monotonic() - started, 1)})
            if max_iters is not None and iteration >= int(max_iters):
                break
        metrics: dict[str, float] = {}
        if validate and ((epoch + 1) % int(runtime["val_every"]) == 0 or epoch + 1 == epochs):
            metrics = _validate(run, setup, splits, info.device.type)
        stop = max_iters is not None and iteration >= int(max_iters)
        if info.is_main:
            assert log is not None
            if metrics:
                log.write({"epoch": epoch + 1, "iteration": iteration,
                           "seconds": round(time.monotonic() - started, 1), **metrics})
                print(f"epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4f}"
                                                         for k, v in metrics.items()), flush=True)
                if metrics["val_map"] > best:
                    best, stale = metrics["val_map"], 0
                    save_embedder(out / "best.pt", model, run.normalize, checkpoint_extra(
                        run.raw, epoch=epoch, iteration=iteration, metrics=metrics))
                else:
                    stale += 1
            state = {"optimizer": optimizer.state_dict(), "epoch": epoch, "iteration": iteration,
                     "best_map": best, "stale": stale, "metrics": metrics}
            save_embedder(last_path, model, run.normalize, checkpoint_extra(run.raw, **state))
            _plot(log, out / "curve.png", setup.describe)
            if patience is not None and stale >= int(patience):
                print(f"early stop: no better validation mAP for {stale} validation(s)",
                      flush=True)
                stop = True
        if info.world_size > 1:
            flag = torch.tensor([float(stop)], device=info.device)
            torch.distributed.broadcast(flag, 0)
            stop = bool(flag.item())
        barrier(info)
        if stop:
            break
    if info.is_main:
        _finish(run, setup, out, best, iteration, started)
    barrier(info)
    return out


def _finish(run: RunConfig, setup: _Setup, out: Path, best: float, iteration: int,
            started: float) -> None:
    """Write the final model(s) (best.pt's weights when validated) and summary.json."""
    model = setup.model
    source = out / "best.pt" if (out / "best.pt").is_file() else out / "last.pt"
    payload = torch.load(source, map_location="cpu", weights_only=True)
    model.load_state_dict(payload["state_dict"])
    chosen = payload["extra"]
    extra = checkpoint_extra(run.raw, epoch=chosen.get("epoch"),
                             iteration=chosen.get("iteration"), metrics=chosen.get("metrics", {}))
    written: dict[str, str] = {}
    if setup.teacher is not None:
        first, second = DIRECTIONS[run.step["direction"]]
        save_embedder(out / f"model_{second}.pt", model, run.normalize,
                      {**extra, "teacher": str(run.step["teacher"])})
        shutil.copyfile(run.step["teacher"], out / f"model_{first}.pt")
        pair = {"depth": "model_depth.pt", "rgb": "model_rgb.pt",
                "direction": run.step["direction"], "teacher": str(run.step["teacher"])}
        (out / "pair.json").write_text(json.dumps(pair, indent=2) + "\n", encoding="utf-8")
        written = {"depth": str(out / "model_depth.pt"), "rgb": str(out / "model_rgb.pt")}
    else:
        save_embedder(out / "model.pt", model, run.normalize, extra)
        written = {"model": str(out / "model.pt")}
    summary = {**written, "step": run.step["kind"], "best_val_map": best if best >= 0 else None,
               "iterations": iteration,
               "minutes": round((time.monotonic() - started) / 60, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {', '.join(written.values())} (from {source.name}), log {out / 'log.csv'}, "
          f"curve {out / 'curve.png'}; {summary['minutes']} min", flush=True)


def _plot(log: CsvLog, path: Path, describe: str) -> None:
    rows = log.read()
    series: dict[str, tuple[list[float], list[float]]] = {}
    for column in ("loss", "val_map"):
        points = [(float(r["iteration"]), float(r[column])) for r in rows if r.get(column)]
        if points:
            xs, ys = zip(*points, strict=True)
            series[column] = (list(xs), list(ys))
    plot_curves(series, path, f"re-ID {describe}", "iteration")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for bad configs, data or checkpoints)."""
    args = get_args_parser().parse_args(argv)
    return run_trainer(args, "train_reid", "training/configs/reid/", _load_resume,
                       build_run_config, train)


if __name__ == "__main__":
    sys.exit(main())
