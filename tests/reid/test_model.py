import dataclasses

import pytest
import torch

from iphd.errors import ConfigError, FrameError
from iphd.reid.model import BLOCKS, Embedder, EmbedderConfig

TINY = EmbedderConfig(backbone_depth=18, backbone_width=8, embedding_dim=16, input_size=(32, 16))


def _batch(n=4, channels=3):
    return torch.randn(n, channels, 32, 16, generator=torch.Generator().manual_seed(0))


def test_defaults_are_paper_b():
    cfg = EmbedderConfig()
    assert (cfg.backbone_depth, cfg.embedding_dim, cfg.input_size) == (50, 128, (256, 128))
    assert cfg.bnneck and cfg.num_classes == 0 and cfg.in_channels == 3


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("backbone_depth", 101),
        ("backbone_width", 2),
        ("embedding_dim", 0),
        ("bnneck", 1),
        ("num_classes", -1),
        ("modality", "thermal"),
        ("input_size", (32,)),
        ("input_size", (0, 16)),
    ],
)
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        EmbedderConfig(**{field: value})


def test_forward_shapes_and_bnneck_feature():
    model = Embedder(dataclasses.replace(TINY, num_classes=5)).train()
    out = model(_batch())
    assert out.embedding.shape == (4, 16) and out.feature.shape == (4, 16)
    assert out.logits is not None and out.logits.shape == (4, 5)
    # Training-mode BNNeck standardises each dimension over the batch.
    torch.testing.assert_close(out.feature.mean(0), torch.zeros(16), atol=1e-5, rtol=0)
    assert not model.bnneck.bias.requires_grad


def test_embed_is_bnneck_feature_or_embedding():
    with_neck = Embedder(TINY)
    x = _batch()
    with_neck.train()(x)  # moves the BNNeck statistics away from the identity
    with_neck.eval()
    out = with_neck(x)
    assert out.logits is None
    torch.testing.assert_close(with_neck.embed(x), out.feature)
    assert not torch.allclose(out.feature, out.embedding)
    plain = Embedder(dataclasses.replace(TINY, bnneck=False)).eval()
    torch.testing.assert_close(plain.embed(x), plain(x).embedding)
    assert not with_neck.embed(x).requires_grad


def test_wrong_channel_count_is_a_frame_error():
    model = Embedder(dataclasses.replace(TINY, modality="zero-padding"))
    with pytest.raises(FrameError, match=r"\(B, 6, H, W\).*got shape \(4, 3, 32, 16\)"):
        model(_batch())
    assert model(_batch(channels=6)).embedding.shape == (4, 16)


def test_freeze_from_freezes_that_block_and_later_only():
    model = Embedder(dataclasses.replace(TINY, num_classes=3))
    assert model.trainable_blocks() == BLOCKS
    model.freeze_from("layer3")
    assert model.trainable_blocks() == ("stem", "layer1", "layer2")
    for block in BLOCKS:
        grads = {p.requires_grad for m in model.block_modules(block) for p in m.parameters()}
        assert grads == ({False} if block in ("layer3", "layer4", "head") else {True})
    model.train()
    assert model.backbone.layer2.training and model.backbone.bn1.training
    assert not model.backbone.layer3.training and not model.bnneck.training


def test_a_later_freeze_unfreezes_earlier_blocks():
    model = Embedder(TINY)
    model.freeze_from("layer1")
    model.freeze_from("layer4")
    assert model.trainable_blocks() == ("stem", "layer1", "layer2", "layer3")
    assert all(p.requires_grad for p in model.backbone.layer3.parameters())
    assert not any(p.requires_grad for p in model.backbone.layer4.parameters())
    assert not model.bnneck.bias.requires_grad
    model.train()
    assert model.backbone.layer1.training and not model.backbone.layer4.training


def test_frozen_batchnorm_statistics_do_not_move_in_training_mode():
    model = Embedder(TINY)
    model.freeze_from("layer4")
    before = model.backbone.layer4[0].bn1.running_mean.clone()
    stem_before = model.backbone.bn1.running_mean.clone()
    model.train()(_batch())
    torch.testing.assert_close(model.backbone.layer4[0].bn1.running_mean, before)
    assert not torch.equal(model.backbone.bn1.running_mean, stem_before)


def test_freeze_from_unknown_block_lists_valid_names():
    with pytest.raises(ConfigError, match="stem, layer1, layer2, layer3, layer4, head"):
        Embedder(TINY).freeze_from("layer5")
