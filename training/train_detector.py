"""Train paper A's depth–thermal person detector on IPHD-format data (one process or torchrun).

Examples::

    # paper A recipe on the real IPHD (GPU; 2 GPUs × 8 as the paper):
    torchrun --nproc_per_node 2 training/train_detector.py \
        --config training/configs/detector/paper.yaml --set data.root=/data/IPHD
    # the shipped CPU model on the simulator's data:
    python training/train_detector.py --config training/configs/detector/cpu_sim.yaml
    # resume an interrupted run:
    python training/train_detector.py --resume out/train/detector/cpu_sim/last.pt
    # fine-tune the shipped model on your own IPHD-format recordings:
    # (the config starts from src/iphd/models/detector.pt through runtime.init_checkpoint):
    # (data.any_size: frames of bag_to_iphd.py keep the recording's size, not IPHD's):
    python training/train_detector.py --config training/configs/detector/cpu_sim_finetune.yaml \
        --set data.root=/data/my_rig --set data.any_size=true
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
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
from iphd.data.iphd import IphdDataset, read_yolo_labels
from iphd.detection.backbone import ResNetBackbone, load_torchvision_state_dict
from iphd.detection.data import (
    ASPECT,
    AugmentConfig,
    DetectionDataset,
    MultiScaleBatchSampler,
    collate,
    input_size_for,
)
from iphd.detection.detector import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    load_checkpoint,
    save_checkpoint,
)
from iphd.detection.loss import DetectionLoss, LossConfig
from iphd.detection.model import DetectorConfig, FusionDetector
from iphd.errors import ConfigError, DatasetError
from iphd.eval.iphd_ap import evaluate
from iphd.normalize import NormalizeConfig

SECTIONS = ("model", "loss", "normalize", "augment", "data", "optim", "runtime")
DATA_DEFAULTS: dict[str, Any] = {
    "root": None,  # folder with iphd_{split}_{depth,thermal}/
    "train_splits": ["train"],  # paper A trains on train + val
    "val_split": "valid",  # evaluated after each epoch for best.pt; null = none
    "labels": "weak",  # weak (labels/, the real IPHD) or clean (labels_clean/, simulator only)
    "val_labels": None,  # label set for validation; null = the same as labels
    "any_size": False,  # accept frames other than 1280×720 depth / 213×120 thermal
    "short_sides": [128, 256, 512],  # random short side per batch (multi-scale training)
    "min_box_px": 2.0,  # drop training boxes smaller than this in network pixels
    "limit": None,  # use only the first N training frames (smoke tests)
    "val_limit": None,  # evaluate only the first N validation frames
}
OPTIM_DEFAULTS: dict[str, Any] = {
    "epochs": 12,
    "batch_size": 8,  # per process; paper A: 2 GPUs × 8
    "lr": 1.0e-3,
    "momentum": 0.9,
    "weight_decay": 5.0e-4,
    "milestones": [7, 9],  # epochs at which the lr is divided by 1/gamma
    "gamma": 0.1,
    "warmup_iters": 500,
    "grad_clip_norm": None,  # clip the global gradient norm; null = off (paper)
    "max_iters": None,  # stop after this many iterations (smoke tests)
}
RUNTIME_DEFAULTS: dict[str, Any] = {
    "out": None,  # output folder; default out/train/detector/<config name>
    "device": "auto",  # auto, cpu or cuda
    "amp": True,  # mixed precision on CUDA (ignored on CPU)
    "workers": 4,  # data-loading processes per training process
    "seed": 0,
    "threads": None,  # torch CPU threads; null = torch's default
    "log_every": 20,  # iterations between CSV rows
    "val_every": 1,  # epochs between validations
    "tensorboard": False,  # also log to TensorBoard (needs the tensorboard package)
    "backbone_weights": None,  # torchvision-format ResNet state dict (ImageNet initialisation)
    # A detector checkpoint (train_detector.py's model.pt / best.pt, or the shipped
    # src/iphd/models/detector.pt) whose weights start the run: fine-tuning on new data. Its
    # model and normalize sections must equal this config's.
    "init_checkpoint": None,
}
LOG_COLUMNS = (
    "epoch", "iteration", "lr", "loss", "cls", "box", "positives", "negatives_kept",
    "positives_ignored_nrf", "negatives_ignored_nrf", "val_ap25", "val_ap50", "val_ap75",
    "seconds",
)


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of the detector trainer."""
    parser: argparse.ArgumentParser = trainer_args_parser(
        __doc__.split("\n", 1)[0], "training/configs/detector/", "optim.lr=0.01"
    )
    return parser


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one training run is built from."""

    model: DetectorConfig
    loss: LossConfig
    normalize: NormalizeConfig
    augment: AugmentConfig
    data: dict[str, Any]
    optim: dict[str, Any]
    runtime: dict[str, Any]
    raw: dict[str, Any]  # the merged YAML, stored in every checkpoint


def build_run_config(raw: dict[str, Any], name: str) -> RunConfig:
    """Check a merged config and fill in defaults.

    Raises:
        ConfigError: unknown sections or keys, invalid values, or no dataset root.
    """
    check_sections(raw, SECTIONS)
    model = build_dataclass(DetectorConfig, raw.get("model"), "model")
    loss = build_dataclass(LossConfig, raw.get("loss"), "loss")
    net_h, net_w = model.input_size
    batches = input_size_for(net_h)  # the size training and validation batches of it have
    if batches != (net_h, net_w):
        raise ConfigError(
            f"model.input_size {[net_h, net_w]} is not the shape training and validation "
            f"batches have: a short side of {net_h} makes them {list(batches)} (the long side "
            f"is the short one x {ASPECT:g}, a multiple of 32), so the checkpoint would be "
            f"validated at another size than it detects at; set model.input_size to "
            f"{list(batches)}"
        )
    normalize_values = dict(raw.get("normalize") or {})
    if "out_size" in normalize_values:
        raise ConfigError(
            "normalize.out_size is set from model.input_size; set that instead"
        )
    normalize_values["out_size"] = [net_w, net_h]
    normalize = build_dataclass(NormalizeConfig, normalize_values, "normalize")
    augment = build_dataclass(AugmentConfig, raw.get("augment"), "augment")
    data = section_values(raw, "data", DATA_DEFAULTS)
    optim = section_values(raw, "optim", OPTIM_DEFAULTS)
    runtime = section_values(raw, "runtime", RUNTIME_DEFAULTS)
    if not data["root"]:
        raise ConfigError(
            "no dataset: set data.root (or --data) to the folder holding iphd_train_depth/ ..."
        )
    if data["labels"] not in ("weak", "clean"):
        raise ConfigError(f"data.labels must be weak or clean, got {data['labels']!r}")
    if int(optim["epochs"]) < 1 or int(optim["batch_size"]) < 1:
        raise ConfigError("optim.epochs and optim.batch_size must be >= 1")
    if float(optim["lr"]) <= 0:
        raise ConfigError(f"optim.lr must be > 0, got {optim['lr']}")
    check_counts(optim, runtime)
    if runtime["out"] is None:
        runtime["out"] = str(Path("out/train/detector") / name)
    return RunConfig(model, loss, normalize, augment, data, optim, runtime, raw)


def _open_split(data: dict[str, Any], split: str, labels: str, role: str = "train") -> IphdDataset:
    """Open one split; refuse, before any training, one without frames.

    Raises:
        DatasetError: the split is missing, malformed or empty (named, with what to do).
    """
    sizes: dict[str, Any] = {"depth_size": None, "thermal_size": None} if data["any_size"] else {}
    dataset = IphdDataset(Path(data["root"]), split, labels=labels, **sizes)
    if not len(dataset):
        other = ("validate on another split (data.val_split; null for none)" if role == "val"
                 else "train on others (data.train_splits)")
        raise DatasetError(
            f"the {split} split of {data['root']} has no frames: write it again (bag_to_iphd.py, "
            f"iphd-sim iphd) or {other}"
        )
    if sizes:
        return dataset
    # Frames of another size fail in a loader worker, behind its traceback: check one here.
    dataset[0]
    return dataset


def _require_people(frames: IphdDataset, root: str, used: int) -> None:
    """Refuse a validation split whose ``used`` first frames label nobody.

    AP is undefined without a person to find: every epoch would score NaN, no epoch would be
    best, and ``best.pt`` would never be written.

    Raises:
        DatasetError: no label file of those frames holds a box (named, with what to do).
    """
    for name in frames.names[:used]:
        if len(read_yolo_labels(frames.label_dir / f"{name}.txt")):
            return
    raise DatasetError(
        f"the {frames.split} split of {root} labels no person in the {used} frames validated "
        f"({frames.label_dir}): AP is undefined there, so no epoch could be chosen as best; "
        "validate on a split with people (data.val_split; null for none)"
    )


#: DetectorConfig fields that shape the weights (the rest is post-processing).
WEIGHT_FIELDS = ("backbone_depth", "backbone_width", "use_rem", "fusion", "head_channels")


def init_from_checkpoint(model: FusionDetector, run: RunConfig, path: Path) -> None:
    """Start ``model`` from a trained detector's weights (fine-tuning).

    Raises:
        CheckpointError: ``path`` is missing or not a detector checkpoint.
        ConfigError: the checkpoint's architecture (``WEIGHT_FIELDS``) or input normalisation
            differs from the run's; the message names each differing field.
    """
    trained, normalize, _ = load_checkpoint(path)
    differ = [
        f"model.{f.name}: checkpoint {getattr(trained.config, f.name)!r}, config "
        f"{getattr(run.model, f.name)!r}"
        for f in dataclasses.fields(DetectorConfig)
        if f.name in WEIGHT_FIELDS and getattr(trained.config, f.name) != getattr(run.model, f.name)
    ] + [
        f"normalize.{f.name}: checkpoint {getattr(normalize, f.name)!r}, config "
        f"{getattr(run.normalize, f.name)!r}"
        for f in dataclasses.fields(NormalizeConfig)
        if getattr(normalize, f.name) != getattr(run.normalize, f.name)
    ]
    if differ:
        raise ConfigError(
            f"runtime.init_checkpoint {path} was trained with another model or normalisation "
            f"than this config ({'; '.join(differ)}); use the config it was trained with "
            "(stored in the checkpoint) or drop init_checkpoint to train from scratch"
        )
    model.load_state_dict(trained.state_dict())


def _backbones(model: torch.nn.Module) -> list[ResNetBackbone]:
    return [m for m in model.modules() if isinstance(m, ResNetBackbone)]


@torch.no_grad()
def evaluate_split(
    model: FusionDetector, dataset: DetectionDataset, batch_size: int, device: torch.device,
    workers: int, quiet: bool,
) -> dict[str, Any]:
    """IPHD AP of ``model`` on a split at its test input size (boxes in network pixels).

    AP is unchanged by scaling x and y by constant factors (IoU is), so comparing in network
    pixels gives the depth-pixel figure without a second pass over the images.
    """
    was_training = model.training
    model.eval()
    short_side = model.config.input_size[0]
    sampler = MultiScaleBatchSampler(
        len(dataset), batch_size, [short_side], shuffle=False, drop_last=False
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers
    )
    predictions: dict[str, np.ndarray] = {}
    truth: dict[str, np.ndarray] = {}
    for images, boxes, names in tqdm(loader, desc="validate", disable=quiet, leave=False):
        results = model.detect(images.to(device))
        for name, gt, (det_boxes, scores) in zip(names, boxes, results, strict=True):
            predictions[name] = torch.cat([det_boxes, scores[:, None]], 1).float().cpu().numpy()
            truth[name] = gt.numpy()
    model.train(was_training)
    return evaluate(predictions, truth)


def _load_resume(path: Path) -> dict[str, Any]:
    payload = read_payload(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "detector",
                           "resume from a last.pt written by train_detector.py")
    require_training_state(payload, path, "train_detector.py")
    return payload


def train(run: RunConfig, info: DistInfo, resume: dict[str, Any] | None, quiet: bool) -> Path:
    """Run the training loop; returns the final model checkpoint (rank 0's path)."""
    data, optim, runtime = run.data, run.optim, run.runtime
    out = Path(runtime["out"])
    seed = int(runtime["seed"])
    torch.manual_seed(seed + info.rank)
    if runtime["threads"]:
        torch.set_num_threads(int(runtime["threads"]))
    show = info.is_main and not quiet

    train_sets = [_open_split(data, s, data["labels"]) for s in data["train_splits"]]
    train_data = DetectionDataset(
        train_sets, run.model.fusion, run.normalize, run.augment, seed,
        float(data["min_box_px"]), data["limit"],
    )
    val_data = None
    if data["val_split"] and info.is_main:
        val_frames = _open_split(data, data["val_split"], data["val_labels"] or data["labels"],
                                 role="val")
        val_data = DetectionDataset(
            val_frames, run.model.fusion, run.normalize, min_box_px=0.0,
            limit=data["val_limit"],
        )
        _require_people(val_frames, data["root"], len(val_data))
    sampler = MultiScaleBatchSampler(
        len(train_data), int(optim["batch_size"]), data["short_sides"], shuffle=True,
        drop_last=True, seed=seed, rank=info.rank, world_size=info.world_size,
    )
    workers = int(runtime["workers"])
    loader = torch.utils.data.DataLoader(
        train_data, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
        pin_memory=info.device.type == "cuda",
    )

    model = FusionDetector(run.model)
    if runtime["backbone_weights"] and resume is None and not runtime["init_checkpoint"]:
        for backbone in _backbones(model):
            load_torchvision_state_dict(backbone, runtime["backbone_weights"])
    if runtime["init_checkpoint"] and resume is None:
        init_from_checkpoint(model, run, repo_file(runtime["init_checkpoint"]))
    model.to(info.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        params, lr=float(optim["lr"]), momentum=float(optim["momentum"]),
        weight_decay=float(optim["weight_decay"]),
    )
    use_amp = bool(runtime["amp"]) and info.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start_epoch, iteration, best_ap = 0, 0, -1.0
    if resume is not None:
        model.load_state_dict(resume["state_dict"])
        extra = resume["extra"]
        optimizer.load_state_dict(extra["optimizer"])
        if "scaler" in extra and use_amp:
            scaler.load_state_dict(extra["scaler"])
        start_epoch = int(extra["epoch"]) + 1
        iteration = int(extra["iteration"])
        best_ap = float(extra.get("best_ap50", -1.0))
    net: torch.nn.Module = model
    if info.world_size > 1:
        net = DistributedDataParallel(
            model, device_ids=[info.local_rank] if info.device.type == "cuda" else None
        )
    criterion = DetectionLoss(run.loss)

    log = CsvLog(out / "log.csv", LOG_COLUMNS) if info.is_main else None
    tb = _tensorboard(out) if info.is_main and runtime["tensorboard"] else None
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(_yaml(run.raw), encoding="utf-8")
        print(
            f"training {run.model.fusion} detector ResNet-{run.model.backbone_depth} "
            f"(width {run.model.backbone_width}) on {len(train_data)} frames, "
            f"{info.world_size} process(es) on {info.device}, {len(sampler)} iterations/epoch, "
            f"output {out}", flush=True,
        )
    epochs = int(optim["epochs"])
    max_iters = optim["max_iters"]
    iters_per_epoch = len(sampler)
    started = time.monotonic()
    last_path = out / "last.pt"
    if max_iters is not None and iteration >= int(max_iters) and start_epoch < epochs:
        # A resumed run keeps its config's cap: say so instead of ending without a step.
        raise ConfigError(
            f"the run already made optim.max_iters={max_iters} iterations; to train on, "
            "add --set optim.max_iters=null (or a higher cap)"
        )
    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch)
        train_data.set_epoch(epoch)
        net.train()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not show)
        for images, targets, _ in bar:
            lr = step_lr(float(optim["lr"]), iteration, iters_per_epoch,
                         int(optim["warmup_iters"]), optim["milestones"], float(optim["gamma"]))
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = images.to(info.device, non_blocking=True)
            with torch.autocast(info.device.type, dtype=torch.float16, enabled=use_amp):
                cls_logits, box_deltas = net(images)
            anchors = model.anchors((images.shape[-2], images.shape[-1]), info.device)
            losses = criterion(cls_logits.float(), box_deltas.float(), anchors, targets)
            if not is_finite(losses["loss"]):
                raise TrainingError(
                    f"loss is {float(losses['loss'].detach())} at epoch {epoch + 1}, iteration "
                    f"{iteration}; lower optim.lr or set optim.grad_clip_norm, and resume "
                    f"from {last_path} if it exists"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["loss"]).backward()
            if optim["grad_clip_norm"]:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, float(optim["grad_clip_norm"]))
            scaler.step(optimizer)
            scaler.update()
            iteration += 1
            if show:
                bar.set_postfix(loss=f"{float(losses['loss'].detach()):.3f}", lr=f"{lr:.2g}")
            if log is not None and iteration % int(runtime["log_every"]) == 0:
                row = {k: float(v.detach()) for k, v in losses.items()}
                row.update(epoch=epoch + 1, iteration=iteration, lr=lr,
                           seconds=round(time.monotonic() - started, 1))
                log.write(row)
                if tb is not None:
                    for k, v in row.items():
                        tb.add_scalar(f"train/{k}", v, iteration)
            if max_iters is not None and iteration >= int(max_iters):
                break
        metrics: dict[str, Any] = {}
        if val_data is not None and ((epoch + 1) % int(runtime["val_every"]) == 0
                                     or epoch + 1 == epochs):
            result = evaluate_split(model, val_data, int(optim["batch_size"]), info.device,
                                    workers, not show)
            metrics = {f"val_ap{round(t * 100)}": float(result["ap"][t])
                       for t in result["thresholds"]}
        if info.is_main:
            assert log is not None
            if metrics:
                log.write({"epoch": epoch + 1, "iteration": iteration,
                           "seconds": round(time.monotonic() - started, 1), **metrics})
                if tb is not None:
                    for k, v in metrics.items():
                        tb.add_scalar(f"val/{k}", v, iteration)
                print(f"epoch {epoch + 1}: " + ", ".join(
                    f"{k} {v:.4f}" for k, v in metrics.items()), flush=True)
            ap50 = metrics.get("val_ap50")
            if ap50 is not None and ap50 > best_ap:
                best_ap = ap50
                save_checkpoint(out / "best.pt", model, run.normalize,
                                checkpoint_extra(run.raw, epoch=epoch, iteration=iteration,
                                                  metrics=metrics))
            state = {"optimizer": optimizer.state_dict(), "epoch": epoch,
                     "iteration": iteration, "best_ap50": best_ap, "metrics": metrics}
            if use_amp:
                state["scaler"] = scaler.state_dict()
            save_checkpoint(last_path, model, run.normalize, checkpoint_extra(run.raw, **state))
            _plot(log, out / "curve.png", run)
        barrier(info)
        if max_iters is not None and iteration >= int(max_iters):
            break
    final = out / "model.pt"
    if info.is_main:
        source = out / "best.pt" if (out / "best.pt").is_file() else None
        if source is not None:
            payload = torch.load(source, map_location="cpu", weights_only=True)
            model.load_state_dict(payload["state_dict"])
            chosen = payload["extra"]
        else:
            chosen = {"epoch": epochs - 1, "iteration": iteration}
        save_checkpoint(final, model, run.normalize, checkpoint_extra(
            run.raw, epoch=chosen.get("epoch"), iteration=chosen.get("iteration"),
            metrics=chosen.get("metrics", {}),
        ))
        if tb is not None:
            tb.close()
        summary = {"model": str(final), "best_val_ap50": best_ap if best_ap >= 0 else None,
                   "iterations": iteration, "minutes": round((time.monotonic() - started) / 60, 1)}
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {final} (from {'best.pt' if source else 'the last epoch'}), "
              f"log {out / 'log.csv'}, curve {out / 'curve.png'}; "
              f"{summary['minutes']} min", flush=True)
    barrier(info)
    return final


def _tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ConfigError(
            "runtime.tensorboard is on but the tensorboard package is not installed; "
            "pip install tensorboard or set runtime.tensorboard=false (log.csv is always written)"
        ) from exc
    return SummaryWriter(str(out / "tensorboard"))


def _yaml(raw: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(raw, sort_keys=False)


def _plot(log: CsvLog | None, path: Path, run: RunConfig) -> None:
    if log is None:
        return
    rows = log.read()
    series: dict[str, tuple[list[float], list[float]]] = {}
    for column in ("loss", "cls", "box", "val_ap50"):
        points = [(float(r["iteration"]), float(r[column])) for r in rows if r.get(column)]
        if points:
            xs, ys = zip(*points, strict=True)
            series[column] = (list(xs), list(ys))
    title = (f"detector {run.model.fusion} ResNet-{run.model.backbone_depth} "
             f"w{run.model.backbone_width}: training curve")
    plot_curves(series, path, title, "iteration")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for bad configs or data)."""
    args = get_args_parser().parse_args(argv)
    return run_trainer(args, "train_detector", "training/configs/detector/", _load_resume,
                       build_run_config, train)


if __name__ == "__main__":
    sys.exit(main())
