"""Cross-modal re-ID evaluation (paper B §4): CMC and mAP, single-gallery-shot or full gallery."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_RANKS: tuple[int, ...] = (1, 5, 10)


@dataclass(frozen=True)
class ReidEvalResult:
    """Scores of one query-modality → gallery-modality evaluation, as fractions in [0, 1].

    Attributes:
        cmc: rank k → fraction of queries whose first true match is within the top k, averaged
            over the trials.
        rank_std: rank k → standard deviation of that fraction over the trials (0 with one
            trial).
        mAP: mean average precision, averaged over the trials.
        mAP_std: standard deviation of the mAP over the trials.
        n_queries: queries given.
        n_skipped: queries never scored because no gallery entry of their identity is left
            after excluding their same-instant counterpart (and, with camids, their own camera).
        n_trial_skipped: extra (trial, query) evaluations skipped in single-gallery-shot mode
            because the one gallery image drawn for the identity was the query's excluded
            counterpart; summed over trials, 0 in full-gallery mode.
        trials: gallery draws averaged (1 in full-gallery mode); draws in which no query could
            be scored are left out.
        single_shot: whether each trial kept one gallery image per identity.
    """

    cmc: dict[int, float]
    rank_std: dict[int, float]
    mAP: float  # noqa: N815 - the name every re-ID paper uses
    mAP_std: float  # noqa: N815
    n_queries: int
    n_skipped: int
    n_trial_skipped: int
    trials: int
    single_shot: bool


def euclidean_distances(query_feats: np.ndarray, gallery_feats: np.ndarray) -> np.ndarray:
    """Euclidean distance of every query embedding to every gallery embedding.

    Args:
        query_feats: (Q, D) embeddings.
        gallery_feats: (G, D) embeddings.

    Returns:
        (Q, G) float64 distances.
    """
    q = np.asarray(query_feats, dtype=np.float64)
    g = np.asarray(gallery_feats, dtype=np.float64)
    sq = (q * q).sum(1)[:, None] + (g * g).sum(1)[None, :] - 2.0 * (q @ g.T)
    # Rounding can leave tiny negatives where two embeddings coincide.
    return np.sqrt(np.maximum(sq, 0.0))


def _as_ids(values: object, length: int, name: str) -> np.ndarray:
    ids = np.asarray(values)
    if ids.shape != (length,) or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must be {length} integers (one per row of features), got "
                         f"{ids.dtype} with shape {ids.shape}")
    return ids.astype(np.int64)


def _as_feats(values: object, name: str) -> np.ndarray:
    feats = np.asarray(values, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] == 0:
        raise ValueError(f"{name} must be (N, D) with N >= 1, got shape {feats.shape}")
    if not np.isfinite(feats).all():
        raise ValueError(f"{name} contains NaN or infinite values; check the extractor")
    return feats


def rank_queries(
    dist: np.ndarray, query_pids: np.ndarray, gallery_pids: np.ndarray, valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank the gallery for every query and score it.

    Gallery entries where ``valid`` is False are removed from that query's ranking; ties in
    distance keep gallery order, so results are deterministic.

    Args:
        dist: (Q, G) query-to-gallery distances.
        query_pids: (Q,) identities of the queries.
        gallery_pids: (G,) identities of the gallery entries.
        valid: (Q, G) bool, False for entries excluded from a query's ranking.

    Returns:
        ``(first_hit, ap, scored)``: (Q,) 0-based rank of the first true match, (Q,) average
        precision, and (Q,) bool, False for queries with no true match left (their first_hit
        and ap are meaningless).
    """
    # Excluded entries sort last and are never matches, so they change no valid rank.
    order = np.argsort(np.where(valid, dist, np.inf), axis=1, kind="stable")
    hits = (gallery_pids[order] == query_pids[:, None]) & np.take_along_axis(valid, order, 1)
    n_hits = hits.sum(1)
    scored = n_hits > 0
    first_hit = np.argmax(hits, axis=1)
    precision = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)
    ap = (precision * hits).sum(1) / np.maximum(n_hits, 1)
    return first_hit, ap, scored


def cross_modal_eval(
    query_feats: np.ndarray,
    query_pids: Sequence[int] | np.ndarray,
    query_pairs: Sequence[int] | np.ndarray,
    gallery_feats: np.ndarray,
    gallery_pids: Sequence[int] | np.ndarray,
    gallery_pairs: Sequence[int] | np.ndarray,
    *,
    query_camids: Sequence[int] | np.ndarray | None = None,
    gallery_camids: Sequence[int] | np.ndarray | None = None,
    trials: int = 10,
    seed: int = 0,
    ranks: Sequence[int] = DEFAULT_RANKS,
    single_shot: bool = True,
) -> ReidEvalResult:
    """CMC and mAP of queries of one modality against a gallery of the other (paper B §4).

    For each query the gallery entry with the same pair id (its time-paired image of the same
    moment in the other modality) is removed before ranking, since matching it is trivial.
    With camids given, gallery entries of the query's identity seen by the query's own camera
    are removed too (the usual re-ID rule; a no-op when the modalities have distinct camids).

    Single-gallery-shot (default): each trial draws one gallery image per identity at random,
    scores every query against that reduced gallery, and the scores are averaged over
    ``trials`` draws. Full gallery (``single_shot=False``): one deterministic pass over every
    gallery entry (multi-shot). AP is the mean of the precision at the rank of each true match.

    Args:
        query_feats: (Q, D) query embeddings.
        query_pids: (Q,) query identities.
        query_pairs: (Q,) pair ids; negative = no same-instant counterpart.
        gallery_feats: (G, D) gallery embeddings, same D.
        gallery_pids: (G,) gallery identities.
        gallery_pairs: (G,) pair ids; negative = no counterpart.
        query_camids: optional (Q,) camera ids.
        gallery_camids: optional (G,) camera ids; given together with ``query_camids``.
        trials: gallery draws to average in single-shot mode (>= 1).
        seed: seed of the gallery draws, so a run is repeatable.
        ranks: CMC ranks to report (>= 1).
        single_shot: one gallery image per identity per trial; False uses the full gallery.

    Returns:
        The averaged scores with their spread over trials and the skipped-query counts.

    Raises:
        ValueError: malformed inputs, or no query has any true match left in the gallery.
    """
    q_feats = _as_feats(query_feats, "query_feats")
    g_feats = _as_feats(gallery_feats, "gallery_feats")
    if q_feats.shape[1] != g_feats.shape[1]:
        raise ValueError(f"query and gallery embeddings differ in size: {q_feats.shape[1]} vs "
                         f"{g_feats.shape[1]}")
    n_q, n_g = len(q_feats), len(g_feats)
    q_pids = _as_ids(query_pids, n_q, "query_pids")
    g_pids = _as_ids(gallery_pids, n_g, "gallery_pids")
    q_pairs = _as_ids(query_pairs, n_q, "query_pairs")
    g_pairs = _as_ids(gallery_pairs, n_g, "gallery_pairs")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be an integer >= 1, got {trials!r}")
    rank_list = [int(k) for k in ranks]
    if not rank_list or min(rank_list) < 1:
        raise ValueError(f"ranks must be integers >= 1, got {list(ranks)}")

    valid = ~((q_pairs[:, None] == g_pairs[None, :]) & (q_pairs[:, None] >= 0))
    if (query_camids is None) != (gallery_camids is None):
        raise ValueError("give both query_camids and gallery_camids, or neither")
    if query_camids is not None and gallery_camids is not None:
        q_cams = _as_ids(query_camids, n_q, "query_camids")
        g_cams = _as_ids(gallery_camids, n_g, "gallery_camids")
        same_view = (q_pids[:, None] == g_pids[None, :]) & (q_cams[:, None] == g_cams[None, :])
        valid &= ~same_view
    # Queries with no true match anywhere in the gallery cannot be scored in any trial.
    answerable = ((q_pids[:, None] == g_pids[None, :]) & valid).any(1)
    n_skipped = int((~answerable).sum())
    if not answerable.any():
        raise ValueError(
            f"none of the {n_q} queries has a true match in the gallery after excluding "
            "same-instant counterparts; check that query and gallery share identities"
        )

    dist = euclidean_distances(q_feats[answerable], g_feats)
    q_pids, valid = q_pids[answerable], valid[answerable]
    rng = np.random.default_rng(seed)
    n_trials = trials if single_shot else 1
    cmc_rows: list[list[float]] = []
    trial_aps: list[float] = []
    n_trial_skipped = 0
    for _ in range(n_trials):
        if single_shot:
            # The first occurrence of each pid in a random permutation is a uniform draw.
            perm = rng.permutation(n_g)
            _, first = np.unique(g_pids[perm], return_index=True)
            keep = np.sort(perm[first])
        else:
            keep = np.arange(n_g)
        first_hit, ap, scored = rank_queries(dist[:, keep], q_pids, g_pids[keep], valid[:, keep])
        n_trial_skipped += int((~scored).sum())
        # A draw where every query lost its only match to exclusion has nothing to score.
        if scored.any():
            cmc_rows.append([float((first_hit[scored] < k).mean()) for k in rank_list])
            trial_aps.append(float(ap[scored].mean()))
    if not trial_aps:
        raise ValueError(
            f"in all {n_trials} gallery draws every query's only drawn match was its own "
            "same-instant counterpart; use more trials or single_shot=False"
        )
    cmc, mean_ap = np.array(cmc_rows), np.array(trial_aps)
    return ReidEvalResult(
        cmc={k: float(v) for k, v in zip(rank_list, cmc.mean(0), strict=True)},
        rank_std={k: float(v) for k, v in zip(rank_list, cmc.std(0), strict=True)},
        mAP=float(mean_ap.mean()),
        mAP_std=float(mean_ap.std()),
        n_queries=n_q,
        n_skipped=n_skipped,
        n_trial_skipped=n_trial_skipped,
        trials=len(trial_aps),
        single_shot=single_shot,
    )


def evaluate_both_directions(
    depth_feats: np.ndarray,
    depth_pids: Sequence[int] | np.ndarray,
    depth_pairs: Sequence[int] | np.ndarray,
    rgb_feats: np.ndarray,
    rgb_pids: Sequence[int] | np.ndarray,
    rgb_pairs: Sequence[int] | np.ndarray,
    *,
    trials: int = 10,
    seed: int = 0,
    ranks: Sequence[int] = DEFAULT_RANKS,
    single_shot: bool = True,
) -> dict[str, ReidEvalResult]:
    """Score depth queries against an RGB gallery and RGB queries against a depth gallery.

    Args:
        depth_feats: (N, D) embeddings of the depth crops.
        depth_pids: (N,) their identities.
        depth_pairs: (N,) their pair ids (negative = none).
        rgb_feats: (M, D) embeddings of the RGB crops.
        rgb_pids: (M,) their identities.
        rgb_pairs: (M,) their pair ids (negative = none).
        trials: gallery draws in single-shot mode.
        seed: seed of the draws (both directions use it).
        ranks: CMC ranks to report.
        single_shot: one gallery image per identity per trial; False uses the full gallery.

    Returns:
        ``{"depth->rgb": ..., "rgb->depth": ...}``, keyed query modality -> gallery modality.
    """
    def run(q: tuple[Any, Any, Any], g: tuple[Any, Any, Any]) -> ReidEvalResult:
        return cross_modal_eval(
            *q, *g, trials=trials, seed=seed, ranks=ranks, single_shot=single_shot
        )

    depth = (depth_feats, depth_pids, depth_pairs)
    rgb = (rgb_feats, rgb_pids, rgb_pairs)
    return {"depth->rgb": run(depth, rgb), "rgb->depth": run(rgb, depth)}


def markdown_header(ranks: Sequence[int] = DEFAULT_RANKS) -> str:
    """Header and separator lines of the table that :func:`markdown_row` fills."""
    cols = ["setting", *(f"rank-{k}" for k in ranks), "mAP", "queries (skipped)"]
    return "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)


def markdown_row(name: str, result: ReidEvalResult, ranks: Sequence[int] | None = None) -> str:
    """One Markdown table row: percentages with their spread over trials, as in paper B.

    Args:
        name: first cell, e.g. ``"BIWI depth→RGB"``.
        result: the scores to show.
        ranks: CMC ranks to show; default all of ``result.cmc`` in order.

    Raises:
        KeyError: a requested rank was not evaluated.
    """

    def cell(mean: float, std: float) -> str:
        text = f"{100 * mean:.1f}"
        return text if result.trials == 1 or math.isclose(std, 0.0) else f"{text} ± {100 * std:.1f}"

    shown = list(result.cmc) if ranks is None else list(ranks)
    missing = [k for k in shown if k not in result.cmc]
    if missing:
        raise KeyError(f"ranks {missing} were not evaluated; evaluated {list(result.cmc)}")
    cells = [name, *(cell(result.cmc[k], result.rank_std[k]) for k in shown)]
    cells += [cell(result.mAP, result.mAP_std), f"{result.n_queries} ({result.n_skipped})"]
    return "| " + " | ".join(cells) + " |"
