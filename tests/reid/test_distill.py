import dataclasses

import pytest
import torch

from iphd.errors import ConfigError
from iphd.reid.distill import (
    build_baseline,
    distillation_loss,
    make_student,
    paired_distillation_loss,
    zero_pad,
)
from iphd.reid.model import Embedder, EmbedderConfig

TINY = EmbedderConfig(backbone_depth=18, backbone_width=8, embedding_dim=16, input_size=(32, 16),
                      num_classes=4)


def _teacher():
    torch.manual_seed(0)
    teacher = Embedder(TINY)
    teacher.train()(torch.randn(8, 3, 32, 16))  # non-trivial BatchNorm statistics
    return teacher.eval()


def test_student_copies_teacher_and_freezes_from_the_block_up():
    teacher = _teacher()
    student = make_student(teacher, "rgb", freeze_from="layer3")
    assert student.config.modality == "rgb" and student.classifier is None
    assert student.trainable_blocks() == ("stem", "layer1", "layer2")
    t_state = teacher.state_dict()
    for name, value in student.state_dict().items():
        torch.testing.assert_close(value, t_state[name], rtol=0, atol=0)
    frozen = [*student.backbone.layer3.parameters(), *student.backbone.layer4.parameters(),
              *student.fc.parameters(), *student.bnneck.parameters()]
    assert frozen and not any(p.requires_grad for p in frozen)
    assert all(p.requires_grad for p in student.backbone.layer2.parameters())
    x = torch.randn(2, 3, 32, 16)
    torch.testing.assert_close(student.eval().embed(x), teacher.embed(x))


def test_sgd_steps_reduce_mse_and_change_only_unfrozen_weights():
    teacher = _teacher()
    student = make_student(teacher, "rgb", freeze_from="layer3")
    g = torch.Generator().manual_seed(1)
    x_rgb, x_depth = torch.randn(8, 3, 32, 16, generator=g), torch.randn(8, 3, 32, 16, generator=g)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in student.parameters() if p.requires_grad], lr=0.05)
    student.train()
    losses = []
    for _ in range(5):
        loss = paired_distillation_loss(student, teacher, x_rgb, x_depth)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    after = student.state_dict()
    for name, value in after.items():
        frozen = name.startswith(("backbone.layer3", "backbone.layer4", "fc.", "bnneck."))
        assert torch.equal(value, before[name]) == frozen or name.endswith("num_batches_tracked")
    for name, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_before[name])


def test_make_student_rejects_bad_requests():
    teacher = _teacher()
    with pytest.raises(ConfigError, match="stem, layer1, layer2, layer3, layer4, head"):
        make_student(teacher, "rgb", freeze_from="conv5")
    with pytest.raises(ConfigError, match="other modality"):
        make_student(teacher, "depth")
    with pytest.raises(ConfigError, match="between depth and rgb"):
        make_student(teacher, "thermal")


def test_distillation_loss_is_mse_and_checks_shapes():
    s, t = torch.zeros(2, 3), torch.ones(2, 3)
    assert distillation_loss(s, t).item() == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="differ in shape"):
        distillation_loss(s, torch.ones(3, 3))
    with pytest.raises(ConfigError, match="paired batches"):
        paired_distillation_loss(make_student(_teacher(), "rgb"), _teacher(),
                                 torch.zeros(2, 3, 32, 16), torch.zeros(3, 3, 32, 16))


def test_baselines():
    base = dataclasses.replace(TINY, num_classes=0)
    one = build_baseline("one-stream", base)
    assert one.config.modality == "both" and one.config.in_channels == 3
    zp = build_baseline("zero-padding", base)
    assert zp.config.in_channels == 6
    x = torch.randn(3, 3, 32, 16)
    padded = zero_pad(x, ["depth", "rgb", "depth"])
    assert padded.shape == (3, 6, 32, 16)
    torch.testing.assert_close(padded[[0, 2], :3], x[[0, 2]])
    torch.testing.assert_close(padded[1, 3:], x[1])
    assert not padded[[0, 2], 3:].any() and not padded[1, :3].any()
    assert zp.eval().embed(padded).shape == (3, 16)
    with pytest.raises(ConfigError, match="one-stream, zero-padding"):
        build_baseline("two-stream", base)
    with pytest.raises(ConfigError, match="each of the 3 crops"):
        zero_pad(x, ["depth"])
