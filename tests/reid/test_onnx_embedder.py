import logging

import numpy as np
import onnx
import pytest
import torch

from iphd.errors import CheckpointError, ConfigError
from iphd.reid.extractor import CropNormalizeConfig, FeatureExtractor, save_embedder
from iphd.reid.model import Embedder, EmbedderConfig
from iphd.reid.onnx_export import OnnxEmbedding, cached_embedder_onnx, export_embedder_onnx
from iphd.tracking.appearance import load_extractor

TINY = EmbedderConfig(backbone_depth=18, backbone_width=8, embedding_dim=16, input_size=(32, 16))


def _model(config=TINY, seed=0):
    torch.manual_seed(seed)
    model = Embedder(config)
    model.train()(torch.randn(8, config.in_channels, 32, 16))  # non-trivial BNNeck statistics
    return model.eval()


def _crops(n, modality="depth"):
    rng = np.random.default_rng(0)
    if modality == "rgb":
        return [rng.integers(0, 256, (40, 20, 3)).astype(np.uint8) for _ in range(n)]
    return [rng.integers(500, 6000, (40, 20)).astype(np.uint16) for _ in range(n)]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IPHD_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


@pytest.mark.parametrize("modality", ["depth", "rgb"])
def test_onnxruntime_embeddings_match_torch(tmp_path, cache, modality):
    config = EmbedderConfig(**{**TINY.__dict__, "modality": modality})
    path = save_embedder(tmp_path / f"{modality}.pt", _model(config), CropNormalizeConfig())
    torch_extractor = FeatureExtractor(path, device="cpu")
    onnx_extractor = FeatureExtractor(path, device="cpu", backend="onnxruntime",
                                      intra_op_threads=1)
    assert onnx_extractor.backend == "onnxruntime" and torch_extractor.backend == "torch"
    assert onnx_extractor.device.type == "cpu" and onnx_extractor.dim == 16
    crops = _crops(5, modality)
    expected = torch_extractor(crops)
    got = onnx_extractor(crops)
    assert got.shape == (5, 16) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert onnx_extractor([]).shape == (0, 16)
    batch = np.random.default_rng(2).standard_normal((3, 3, 32, 16)).astype(np.float32)
    np.testing.assert_allclose(
        onnx_extractor.embed_batch(batch), torch_extractor.embed_batch(batch), atol=1e-5
    )
    # Batches of any size go through the dynamic batch axis.
    small = FeatureExtractor(path, device="cpu", backend="onnxruntime", batch_size=2)
    np.testing.assert_allclose(small(crops), expected, atol=1e-5)


def test_the_export_is_made_once_per_checkpoint_content(tmp_path, cache):
    path = save_embedder(tmp_path / "reid.pt", _model(), CropNormalizeConfig())
    FeatureExtractor(path, device="cpu", backend="onnxruntime")
    (export,) = cache.iterdir()
    assert export.name.startswith("reid-") and export.suffix == ".onnx"
    made = export.stat().st_mtime_ns
    assert cached_embedder_onnx(path) == export and export.stat().st_mtime_ns == made
    save_embedder(path, _model(seed=1), CropNormalizeConfig())  # retrained: other bytes
    FeatureExtractor(path, device="cpu", backend="onnxruntime")
    assert len(list(cache.iterdir())) == 2


def test_bad_requests_are_named(tmp_path, cache):
    with pytest.raises(ConfigError, match="backend must be one of"):
        FeatureExtractor(_model(), CropNormalizeConfig(), device="cpu", backend="tensorrt")
    with pytest.raises(ConfigError, match="pass its path"):
        FeatureExtractor(_model(), CropNormalizeConfig(), device="cpu", backend="onnxruntime")
    with pytest.raises(CheckpointError, match="missing.pt"):
        FeatureExtractor(tmp_path / "missing.pt", device="cpu", backend="onnxruntime")
    baseline = EmbedderConfig(**{**TINY.__dict__, "modality": "zero-padding"})
    with pytest.raises(ConfigError, match="baseline"):
        export_embedder_onnx(_model(baseline), tmp_path / "zp.onnx")


def test_broken_or_foreign_exports_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        OnnxEmbedding(tmp_path / "missing.onnx", device="cpu")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="corrupt.onnx.*export it again"):
        OnnxEmbedding(corrupt, device="cpu")
    path = export_embedder_onnx(_model(), tmp_path / "m.onnx")
    assert OnnxEmbedding(path, device="cpu").config == TINY
    proto = onnx.load(path)
    for prop in proto.metadata_props:
        if prop.key == "iphd_format_version":
            prop.value = "99"
    onnx.save(proto, tmp_path / "future.onnx")
    with pytest.raises(CheckpointError, match="version 99"):
        OnnxEmbedding(tmp_path / "future.onnx", device="cpu")
    with pytest.raises(ConfigError, match="device"):
        OnnxEmbedding(path, device="tpu")


def test_load_extractor_picks_onnxruntime_on_the_cpu_and_falls_back_to_torch(
    tmp_path, cache, monkeypatch, caplog
):
    path = str(save_embedder(tmp_path / "reid.pt", _model(), CropNormalizeConfig()))
    assert load_extractor(path, "depth", "cpu").backend == "torch"  # the library's default
    assert load_extractor(path, "depth", "cpu", "auto", 1).backend == "onnxruntime"
    assert load_extractor(path, "depth", "cpu", "onnxruntime").backend == "onnxruntime"
    with pytest.raises(ConfigError, match="backend"):
        load_extractor(path, "depth", "cpu", "onnx")
    with pytest.raises(CheckpointError, match="missing.pt"):
        load_extractor(str(tmp_path / "missing.pt"), "depth", "cpu", "auto")

    import iphd.reid.onnx_export as onnx_export

    def broken(*args, **kwargs):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(onnx_export, "cached_embedder_onnx", broken)
    with caplog.at_level(logging.WARNING, logger="iphd.tracking.appearance"):
        assert load_extractor(path, "depth", "cpu", "auto").backend == "torch"
    assert "exporter crashed" in caplog.text and "running it on torch" in caplog.text
    with pytest.raises(RuntimeError, match="exporter crashed"):
        load_extractor(path, "depth", "cpu", "onnxruntime")


def test_an_embedder_given_as_the_detector_is_named_for_what_it_is(tmp_path, cache):
    # Both trainers write model.pt: the embedder's cached export is not taken for the detector.
    from iphd.detections import DetectionConfig, load_detector

    path = save_embedder(tmp_path / "model.pt", _model(), CropNormalizeConfig())
    FeatureExtractor(path, device="cpu", backend="onnxruntime")
    with pytest.raises(CheckpointError) as caught:
        load_detector(DetectionConfig(checkpoint=str(path), device="cpu", backend="onnxruntime"))
    assert "re-ID" in str(caught.value) and "export it again" not in str(caught.value)
