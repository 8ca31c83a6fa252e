"""The shipped re-ID pair: files, configs, and that the depth one tells people of a scene apart."""

import numpy as np
import pytest
import torch

from iphd.calibration import load_calibration
from iphd.reid.data import SimReidSource, select
from iphd.reid.extractor import load_embedder
from iphd.sim.generate import generate_reid
from iphd.tracking.appearance import SHIPPED_DEPTH_EMBEDDER, SHIPPED_RGB_EMBEDDER, load_extractor

MAX_MB = 25.0  # the pair together


def test_the_shipped_pair_is_small_loads_safely_and_shares_one_crop_setting():
    size_mb = (SHIPPED_DEPTH_EMBEDDER.stat().st_size + SHIPPED_RGB_EMBEDDER.stat().st_size) / 2**20
    assert size_mb <= MAX_MB
    normalizes = []
    for path, modality in ((SHIPPED_DEPTH_EMBEDDER, "depth"), (SHIPPED_RGB_EMBEDDER, "rgb")):
        payload = torch.load(path, map_location="cpu", weights_only=True)
        assert "optimizer" not in payload["extra"]  # weights only, not a training snapshot
        model, normalize, _ = load_embedder(path)
        assert model.config.modality == modality and model.config.embedding_dim == 128
        normalizes.append(normalize)
    # One embedding space: the RGB student was distilled from the depth model, crops alike.
    assert normalizes[0] == normalizes[1]
    assert normalizes[0].depth_crop == "metric" and normalizes[0].depth_reference == "person"
    assert load_extractor("", "depth").modality == "depth"
    assert load_extractor("", "rgb").modality == "rgb"


@pytest.fixture(scope="module")
def unseen_people(tmp_path_factory):
    """Identities of a seed the shipped pair was not trained on, 2-3 per session."""
    out = tmp_path_factory.mktemp("shipped_reid") / "ds"
    generate_reid(out, seed=99, identities=8, sessions=2, crops=4, test_fraction=0.5,
                  workers=1, calibration=load_calibration())
    return SimReidSource(out, "train")


def test_the_shipped_depth_embedder_tells_the_people_of_one_scene_apart(unseen_people):
    """What the tracker asks of it: is the nearest other crop of a session the same person?"""
    extractor = load_extractor("", "depth", "cpu")
    records = select(unseen_people.records, modality="depth")
    feats = extractor([unseen_people.load_crop(r) for r in records])
    assert np.allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    pids = np.array([r.pid for r in records])
    sessions = np.array([r.session for r in records])
    hits, chance, queries = 0, 0.0, 0
    for i in range(len(records)):
        others = np.flatnonzero((sessions == sessions[i]) & (np.arange(len(records)) != i))
        if len(set(pids[others])) < 2:
            continue
        nearest = others[np.argmin(np.linalg.norm(feats[others] - feats[i], axis=1))]
        hits += pids[nearest] == pids[i]
        chance += np.mean(pids[others] == pids[i])
        queries += 1
    assert queries >= 8
    # Measured 0.947 rank-1 on the 40 test identities of its data (chance about 0.39; the
    # earlier pair 0.884 on the same crops); leave room.
    assert hits / queries >= max(0.65, chance / queries + 0.15)
