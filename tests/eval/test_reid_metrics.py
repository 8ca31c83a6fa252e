import numpy as np
import pytest

from iphd.eval.reid_metrics import (
    cross_modal_eval,
    euclidean_distances,
    evaluate_both_directions,
    markdown_header,
    markdown_row,
)


def _full(q, qp, qpair, g, gp, gpair, **kw):
    return cross_modal_eval(
        np.asarray(q, float).reshape(-1, 1), qp, qpair,
        np.asarray(g, float).reshape(-1, 1), gp, gpair, single_shot=False, **kw,
    )


def test_euclidean_distances_match_direct_formula():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(4, 3)), rng.normal(size=(5, 3))
    direct = np.linalg.norm(q[:, None] - g[None], axis=2)
    np.testing.assert_allclose(euclidean_distances(q, g), direct, atol=1e-12)


def test_true_match_at_rank_two_scores_half_ap():
    r = _full([0.0], [1], [-1], [0.5, 1.0, 2.0], [2, 1, 3], [-1, -1, -1])
    assert r.cmc == {1: 0.0, 5: 1.0, 10: 1.0}
    assert r.mAP == pytest.approx(0.5)
    assert (r.n_queries, r.n_skipped, r.trials) == (1, 0, 1)


def test_two_true_matches_at_ranks_one_and_three():
    r = _full([0.0], [1], [-1], [0.1, 0.2, 0.3, 0.4], [1, 2, 1, 3], [-1] * 4)
    assert r.cmc[1] == 1.0
    assert r.mAP == pytest.approx((1 + 2 / 3) / 2)


def test_map_averages_over_queries():
    # Query 0 (pid 1) ranks its match 1st; query 1 (pid 2) at 10 ranks pid 2 (at 3) 2nd.
    r = _full([0.0, 10.0], [1, 2], [-1, -1], [0.0, 3.0, 12.0], [1, 2, 3], [-1] * 3)
    assert r.cmc[1] == pytest.approx(0.5)
    assert r.mAP == pytest.approx((1.0 + 0.5) / 2)


def test_same_instant_counterpart_is_excluded():
    gallery, pids, pairs = [0.0, 0.5, 1.0], [1, 2, 1], [7, 8, 9]
    with_pair = _full([0.0], [1], [7], gallery, pids, pairs)
    assert with_pair.cmc[1] == 0.0 and with_pair.mAP == pytest.approx(0.5)
    # Without a pair id the distance-0 counterpart is a legitimate first match.
    no_pair = _full([0.0], [1], [-1], gallery, pids, pairs)
    assert no_pair.cmc[1] == 1.0 and no_pair.mAP == pytest.approx((1 + 2 / 3) / 2)


def test_negative_pair_ids_never_exclude_each_other():
    r = _full([0.0], [1], [-1], [0.0, 1.0], [1, 2], [-1, -1])
    assert r.cmc[1] == 1.0


def test_camids_exclude_same_identity_same_camera():
    kw = {"query_camids": [0], "gallery_camids": [0, 1, 1]}
    r = _full([0.0], [1], [-1], [0.0, 0.5, 1.0], [1, 2, 1], [-1] * 3, **kw)
    assert r.cmc[1] == 0.0 and r.mAP == pytest.approx(0.5)


def test_queries_without_gallery_match_are_skipped_and_counted():
    # Query 1's identity is absent; query 2's only gallery image is its own counterpart.
    r = _full([0.0, 5.0, 9.0], [1, 4, 3], [-1, -1, 11], [0.1, 2.0, 9.0], [1, 2, 3], [-1, -1, 11])
    assert (r.n_queries, r.n_skipped) == (3, 2)
    assert r.cmc[1] == 1.0 and r.mAP == 1.0


def test_no_answerable_query_raises():
    with pytest.raises(ValueError, match="none of the 1 queries"):
        _full([0.0], [1], [3], [0.0], [1], [3])


def test_single_shot_draws_one_image_per_identity():
    # pid 1 at 1 or 3 around pid 2 at 2: each draw gives rank 1 (AP 1) or rank 2 (AP 0.5).
    q, g = np.zeros((1, 1)), np.array([[1.0], [3.0], [2.0]])
    r = cross_modal_eval(q, [1], [-1], g, [1, 1, 2], [-1] * 3, trials=200, seed=3)
    assert 0.3 < r.cmc[1] < 0.7 and r.cmc[5] == 1.0
    assert r.mAP == pytest.approx((1 + r.cmc[1]) / 2)
    assert r.rank_std[1] > 0 and r.rank_std[5] == 0.0
    assert r.trials == 200 and r.single_shot


def test_single_shot_is_deterministic_for_a_seed():
    rng = np.random.default_rng(1)
    q, g = rng.normal(size=(12, 4)), rng.normal(size=(30, 4))
    qp, gp = np.arange(12) % 4, np.arange(30) % 4
    qpair, gpair = np.arange(12), np.arange(30)
    a = cross_modal_eval(q, qp, qpair, g, gp, gpair, seed=5)
    b = cross_modal_eval(q, qp, qpair, g, gp, gpair, seed=5)
    c = cross_modal_eval(q, qp, qpair, g, gp, gpair, seed=6)
    assert a == b and a.trials == 10
    assert (a.cmc, a.mAP) != (c.cmc, c.mAP)


def test_single_shot_counts_trials_that_drew_the_counterpart():
    g = np.array([[0.0], [1.0], [2.0]])
    r = cross_modal_eval(np.zeros((1, 1)), [1], [7], g, [1, 1, 2], [7, 8, 9], trials=50)
    assert r.n_skipped == 0 and 0 < r.n_trial_skipped < 50
    assert r.cmc[1] == 1.0  # whenever scored, the non-counterpart image is nearest


def test_both_directions_swap_query_and_gallery():
    depth = np.array([[0.0], [10.0], [0.2], [10.2]])
    rgb = np.array([[0.1], [10.1], [20.0]])
    res = evaluate_both_directions(
        depth, [1, 2, 1, 2], [0, 1, 2, 3], rgb, [1, 2, 3], [0, 1, -1], single_shot=False
    )
    assert set(res) == {"depth->rgb", "rgb->depth"}
    d2r, r2d = res["depth->rgb"], res["rgb->depth"]
    # Depth 0 and 1 lose their only RGB match (their counterpart): skipped.
    assert (d2r.n_queries, d2r.n_skipped, d2r.cmc[1]) == (4, 2, 1.0)
    # RGB pid 3 has no depth image; the others still find depth 2 / 3 first.
    assert (r2d.n_queries, r2d.n_skipped, r2d.cmc[1]) == (3, 1, 1.0)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="differ in size"):
        cross_modal_eval(np.zeros((1, 2)), [0], [0], np.zeros((1, 3)), [0], [1])
    with pytest.raises(ValueError, match="query_pids"):
        cross_modal_eval(np.zeros((2, 2)), [0], [0, 1], np.zeros((1, 2)), [0], [1])
    with pytest.raises(ValueError, match="NaN"):
        cross_modal_eval(np.full((1, 2), np.nan), [0], [0], np.zeros((1, 2)), [0], [1])
    with pytest.raises(ValueError, match="trials"):
        cross_modal_eval(np.zeros((1, 2)), [0], [0], np.zeros((1, 2)), [0], [1], trials=0)
    with pytest.raises(ValueError, match="both"):
        cross_modal_eval(np.zeros((1, 2)), [0], [0], np.zeros((1, 2)), [0], [1], query_camids=[0])


def test_markdown_row_shows_percentages_and_spread():
    single = _full([0.0], [1], [-1], [0.5, 1.0, 2.0], [2, 1, 3], [-1] * 3)
    assert markdown_row("x", single) == "| x | 0.0 | 100.0 | 100.0 | 50.0 | 1 (0) |"
    header = markdown_header()
    assert header.splitlines()[0].count("|") == markdown_row("x", single).count("|")
    q, g = np.zeros((1, 1)), np.array([[1.0], [3.0], [2.0]])
    shot = cross_modal_eval(q, [1], [-1], g, [1, 1, 2], [-1] * 3, trials=4, seed=0)
    assert "±" in markdown_row("y", shot, ranks=(1,))
    with pytest.raises(KeyError, match="20"):
        markdown_row("x", single, ranks=(20,))
