import pytest
import torch

from iphd.detection.backbone import ResNetBackbone, load_torchvision_state_dict
from iphd.errors import ConfigError


@pytest.mark.parametrize(("depth", "channels"), [(18, (128, 256, 512)), (50, (512, 1024, 2048))])
def test_backbone_returns_c3_c4_c5_at_strides_8_16_32(depth, channels):
    torch.manual_seed(0)
    model = ResNetBackbone(depth).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [
        (1, c, 64 // s, 96 // s) for c, s in zip(channels, (8, 16, 32), strict=True)
    ]
    assert model.out_channels == channels


def test_backbone_rejects_unknown_depth():
    with pytest.raises(ConfigError, match="101"):
        ResNetBackbone(101)


def _torchvision_style_state(model):
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["fc.weight"] = torch.zeros(1000, 512)
    state["fc.bias"] = torch.zeros(1000)
    return state


def test_load_torchvision_state_dict_adapts_conv1_and_ignores_fc(tmp_path):
    torch.manual_seed(0)
    source = ResNetBackbone(18)
    path = tmp_path / "resnet18.pth"
    torch.save(_torchvision_style_state(source), path)
    target = ResNetBackbone(18, in_channels=1)
    load_torchvision_state_dict(target, path)
    rgb = source.conv1.weight
    assert torch.allclose(target.conv1.weight, rgb.mean(dim=1, keepdim=True))
    assert torch.equal(target.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert torch.equal(target.bn1.running_var, source.bn1.running_var)


def test_load_torchvision_state_dict_names_missing_and_unexpected_keys():
    state = _torchvision_style_state(ResNetBackbone(18))
    del state["layer2.0.bn1.weight"]
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    with pytest.raises(ConfigError) as info:
        load_torchvision_state_dict(ResNetBackbone(18), state)
    message = str(info.value)
    assert "layer2.0.bn1.weight" in message
    assert "layer5.0.conv1.weight" in message


def test_load_torchvision_state_dict_rejects_other_depth():
    with pytest.raises(ConfigError, match="ResNet-18"):
        load_torchvision_state_dict(ResNetBackbone(18), ResNetBackbone(34).state_dict())


def test_load_torchvision_state_dict_reports_unreadable_file(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="broken.pth"):
        load_torchvision_state_dict(ResNetBackbone(18), path)


def test_width_scales_every_stage_and_rejects_tiny_widths():
    model = ResNetBackbone(18, width=16)
    assert model.out_channels == (32, 64, 128)
    assert model.conv1.weight.shape == (16, 3, 7, 7)
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 64, 96))
    assert [f.shape[1] for f in feats] == [32, 64, 128]
    assert ResNetBackbone(50, width=16).out_channels == (128, 256, 512)
    with pytest.raises(ConfigError, match="width"):
        ResNetBackbone(18, width=2)
