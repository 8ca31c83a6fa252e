"""Paper B step II (cross-modal distillation) and the one-stream and zero-padding baselines."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from iphd.errors import ConfigError
from iphd.reid.model import Embedder, EmbedderConfig

#: Modalities one network of the distillation pipeline embeds.
SINGLE_MODALITIES: tuple[str, ...] = ("depth", "rgb")

#: Baselines of paper B's comparison → the ``EmbedderConfig.modality`` that builds them.
BASELINES: dict[str, str] = {"one-stream": "both", "zero-padding": "zero-padding"}


def make_student(teacher: Embedder, modality: str, freeze_from: str = "layer3") -> Embedder:
    """Build the step-II network G for ``modality`` from the step-I network F.

    G is a copy of F's weights (on F's device) with ``modality`` set and no classifier (step II
    has no identity labels); the blocks from ``freeze_from`` up to the embedding are frozen, so
    training G on paired crops only moves its lower layers towards F's embedding space. The
    BNNeck, frozen with the head, keeps F's statistics, so G's inference features are on F's
    scale.

    Args:
        teacher: the step-I embedder of the other single modality.
        modality: ``"depth"`` or ``"rgb"``, different from the teacher's.
        freeze_from: first frozen block (see ``iphd.reid.model.BLOCKS``); "layer3" in paper B.

    Returns:
        The student, in training mode.

    Raises:
        ConfigError: an unknown block, a modality that is not single or equals the teacher's.
    """
    if modality not in SINGLE_MODALITIES or teacher.config.modality not in SINGLE_MODALITIES:
        raise ConfigError(
            f"distillation goes between {' and '.join(SINGLE_MODALITIES)}; got teacher "
            f"{teacher.config.modality!r} and student {modality!r}"
        )
    if modality == teacher.config.modality:
        raise ConfigError(
            f"the student must embed the other modality; the teacher already embeds {modality}"
        )
    config = dataclasses.replace(teacher.config, modality=modality, num_classes=0)
    student = Embedder(config)
    state = {k: v for k, v in teacher.state_dict().items() if not k.startswith("classifier.")}
    student.load_state_dict(state)
    student.to(next(teacher.parameters()).device)
    student.freeze_from(freeze_from)
    return student.train()


def distillation_loss(student_embedding: Tensor, teacher_embedding: Tensor) -> Tensor:
    """Mean squared error between G(x_m2) and the fixed F(x_m1), both (B, D) pre-BNNeck.

    Raises:
        ConfigError: the two embeddings differ in shape.
    """
    if student_embedding.shape != teacher_embedding.shape:
        raise ConfigError(
            f"student and teacher embeddings differ in shape: {tuple(student_embedding.shape)} "
            f"vs {tuple(teacher_embedding.shape)}"
        )
    return F.mse_loss(student_embedding, teacher_embedding.detach())


def paired_distillation_loss(
    student: Embedder, teacher: Embedder, x_student: Tensor, x_teacher: Tensor
) -> Tensor:
    """Step-II loss on one batch of time-paired crops: MSE(G(x_m2), F(x_m1)).

    The teacher runs in eval mode without gradient (it is fixed); the student in whatever mode
    the caller set (training mode keeps its frozen blocks in eval mode, see ``freeze_from``).

    Args:
        student: G, from ``make_student``.
        teacher: F, the step-I network.
        x_student: (B, 3, H, W) normalised crops of the student's modality.
        x_teacher: (B, 3, H, W) normalised crops of the teacher's modality, row i taken at the
            same time as ``x_student[i]``.

    Returns:
        Scalar loss with gradient for the student's trainable parameters.
    """
    if x_student.shape[0] != x_teacher.shape[0]:
        raise ConfigError(
            f"paired batches differ in size: {x_student.shape[0]} student vs "
            f"{x_teacher.shape[0]} teacher crops"
        )
    teacher.eval()
    with torch.no_grad():
        target = teacher(x_teacher).embedding
    return distillation_loss(student(x_student).embedding, target)


def build_baseline(name: str, config: EmbedderConfig) -> Embedder:
    """Build a baseline of paper B's comparison from an architecture ``config``.

    ``"one-stream"``: one embedder trained on depth and RGB crops mixed (3 channels, modality
    ``"both"``). ``"zero-padding"`` (Wu et al.): one embedder with 6 input channels, depth in
    0-2 and RGB in 3-5, each crop filling its modality's half and leaving the other zero (see
    ``zero_pad``), so the network can tell the modalities apart while sharing every weight.

    Raises:
        ConfigError: an unknown baseline; the message lists the known ones.
    """
    if name not in BASELINES:
        raise ConfigError(f"unknown baseline {name!r}; use one of {', '.join(BASELINES)}")
    return Embedder(dataclasses.replace(config, modality=BASELINES[name]))


def zero_pad(x: Tensor, modality: str | Sequence[str]) -> Tensor:
    """Lay (B, 3, H, W) normalised crops into the zero-padding baseline's 6-channel input.

    Args:
        x: normalised crops, depth (replicated) or RGB.
        modality: ``"depth"`` or ``"rgb"`` for the whole batch, or one per crop.

    Returns:
        (B, 6, H, W): depth crops in channels 0-2, RGB crops in 3-5, zeros elsewhere (0 is the
        normalised mean, what an absent modality should look like).

    Raises:
        ConfigError: an unknown modality or a wrong count of per-crop modalities.
    """
    names = [modality] * x.shape[0] if isinstance(modality, str) else list(modality)
    if len(names) != x.shape[0] or any(m not in SINGLE_MODALITIES for m in names):
        raise ConfigError(
            f"need one of {', '.join(SINGLE_MODALITIES)} for each of the {x.shape[0]} crops, "
            f"got {modality!r}"
        )
    is_depth = torch.tensor([m == "depth" for m in names], dtype=x.dtype, device=x.device)
    is_depth = is_depth[:, None, None, None]
    return torch.cat([x * is_depth, x * (1.0 - is_depth)], dim=1)
