"""Where a bag's detection errors come from: second boxes, loose boxes, background, misses, depth.

AP and the tracking metrics say how much is wrong; this says what kind of wrong, on the
detections the detector node publishes (those at or above its ``score_threshold``), so the fix
can be chosen on a user's own recordings:

- a *second box* lies on a labelled person another detection already matched (the detector's
  NMS let a part of the person through): it tends to start a second track on that person;
- a *loose box* lies on a labelled person no detection matched (IoU with the person's box
  under 0.5): a localisation error, a miss and a false positive at once;
- *on an unlabelled person*: the box lies on someone the label rule leaves out (too hidden or
  too small to be labelled);
- *background*: the box touches no one (a thing taken for a person: hard negatives to train on);
- *misses* are labelled people without a matched detection, split by how visible they are;
- *position error* is the ground distance between a matched detection's 3D point and the
  person's, which decides whether the tracker can follow them.

Matching follows the IPHD protocol (:func:`iphd.eval.iphd_ap.match_frame`, IoU 0.5); the
other boxes go to the person they overlap most (IoU at least ``TOUCH_IOU``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from iphd.data.truth import PersonTruth
from iphd.eval.iphd_ap import iou_matrix, match_frame

#: IoU with a person's box at which a detection counts as a match (the IPHD protocol at 0.5).
MATCH_IOU = 0.5
#: Least IoU with a person's box for an unmatched detection to count as lying on that person.
TOUCH_IOU = 0.1
#: Visibility bin edges for misses: hidden (< 0.4), partly hidden (0.4 .. 0.7), visible.
VISIBILITY_EDGES: tuple[float, float] = (0.4, 0.7)
VISIBILITY_BINS: tuple[str, str, str] = ("under_0.4", "0.4_to_0.7", "0.7_and_over")
#: Ground-plane axes of the depth optical frame (x right, z forward; y points down).
GROUND_AXES: tuple[int, int] = (0, 2)
#: Position errors counted above these distances, metres.
POSITION_LEVELS_M: tuple[float, float] = (0.5, 1.0)
#: Unmatched-detection kinds, in report order.
KINDS: tuple[str, str, str, str] = ("second_box", "loose_box", "unlabelled_person", "background")


def _visibility_bin(visibility: float) -> int:
    return int(np.searchsorted(VISIBILITY_EDGES, visibility, side="right"))


@dataclass
class DetectionBreakdown:
    """Running counts over a bag's frames; :meth:`add_frame` per frame, :meth:`summary` at the end.

    Attributes:
        matched: detections matching a labelled person (IoU >= ``MATCH_IOU``, one each).
        kinds: unmatched detections per kind (``KINDS``).
        labelled: labelled people per visibility bin (``VISIBILITY_BINS``).
        found: of those, the ones a detection matched.
        position_errors_m: ground distance of each matched detection's position to the
            person's, metres (where both have one).
        no_position: matched detections without a position (NaN: no valid depth of their own).
    """

    matched: int = 0
    kinds: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    labelled: list[int] = field(default_factory=lambda: [0, 0, 0])
    found: list[int] = field(default_factory=lambda: [0, 0, 0])
    position_errors_m: list[float] = field(default_factory=list)
    no_position: int = 0
    #: Matched detections whose ground truth has no 3D position (2D annotations).
    truth_without_position: int = 0

    def add_frame(
        self,
        boxes_xyxy: np.ndarray,
        scores: np.ndarray,
        positions_m: np.ndarray | None,
        people: Sequence[PersonTruth],
        labelled: Sequence[PersonTruth],
    ) -> None:
        """Count one frame.

        Args:
            boxes_xyxy: (N, 4) published detection boxes, depth pixels.
            scores: (N,) their scores (the protocol visits them best first).
            positions_m: (N, 3) their positions in the depth optical frame, metres (NaN where
                none), or None when the source has no positions.
            people: every ground-truth person of the frame.
            labelled: the people that pass the label rule (a subset of ``people``).
        """
        boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        label_boxes = np.asarray([p.box_xyxy for p in labelled], dtype=np.float64).reshape(-1, 4)
        tp = match_frame(boxes, np.asarray(scores, dtype=np.float64), label_boxes, MATCH_IOU)
        found = np.zeros(len(labelled), dtype=bool)
        if len(boxes) and len(labelled):
            to_label = iou_matrix(boxes, label_boxes).argmax(axis=1)
            found[to_label[tp]] = True
            for j in np.flatnonzero(tp):
                self._position(None if positions_m is None else positions_m[j],
                               labelled[to_label[j]])
        self.matched += int(tp.sum())
        for person, hit in zip(labelled, found, strict=True):
            b = _visibility_bin(person.visibility)
            self.labelled[b] += 1
            self.found[b] += int(hit)
        rest = np.flatnonzero(~tp)
        if not rest.size:
            return
        if not people:
            self.kinds["background"] += int(rest.size)
            return
        iou = iou_matrix(boxes[rest], np.asarray([p.box_xyxy for p in people], dtype=np.float64))
        labelled_index = {id(p): i for i, p in enumerate(labelled)}
        for row in iou:
            k = int(row.argmax())
            if row[k] < TOUCH_IOU:
                kind = "background"
            elif id(people[k]) not in labelled_index:
                kind = "unlabelled_person"
            else:
                kind = "second_box" if found[labelled_index[id(people[k])]] else "loose_box"
            self.kinds[kind] += 1

    def _position(self, position_m: np.ndarray | None, person: PersonTruth) -> None:
        if position_m is None:
            return
        p = np.asarray(position_m, dtype=np.float64)
        if not np.all(np.isfinite(p)):
            self.no_position += 1
            return
        truth = np.asarray(person.position_m, dtype=np.float64)
        if not np.all(np.isfinite(truth)):
            self.truth_without_position += 1  # 2D labels: nothing to compare with
            return
        axes = list(GROUND_AXES)
        self.position_errors_m.append(float(np.linalg.norm(p[axes] - truth[axes])))

    def summary(self) -> dict[str, Any]:
        """JSON-able summary; None where a value is undefined.

        Counts per kind and their fractions of the published detections, recall per
        visibility bin and position-error statistics.
        """
        total = self.matched + sum(self.kinds.values())

        def frac(n: int, of: int) -> float | None:
            return n / of if of else None

        errors = np.asarray(self.position_errors_m, dtype=np.float64)
        positions: dict[str, Any] = {
            "with_position": int(errors.size),
            "no_position": self.no_position,
            "truth_without_position": self.truth_without_position,
            "median_m": float(np.median(errors)) if errors.size else None,
            "p90_m": float(np.percentile(errors, 90)) if errors.size else None,
        }
        for level in POSITION_LEVELS_M:
            positions[f"over_{level:g}_m"] = frac(int((errors > level).sum()), int(errors.size))
        return {
            "detections": total,
            "matched": self.matched,
            **{kind: n for kind, n in self.kinds.items()},
            "fractions": {
                kind: frac(n, total) for kind, n in (("matched", self.matched), *self.kinds.items())
            },
            "recall_by_visibility": {
                name: {"labelled": n, "found": f, "recall": frac(f, n)}
                for name, n, f in zip(VISIBILITY_BINS, self.labelled, self.found, strict=True)
            },
            "position": positions,
        }


def breakdown_markdown(summary: dict[str, Any]) -> list[str]:
    """The report section of a :meth:`DetectionBreakdown.summary`."""

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100.0 * value:.1f} %"

    def metres(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    fr = summary["fractions"]
    lines = [
        "## Where the errors come from", "",
        f"The {summary['detections']} published detections (those at or above the detector's "
        "score threshold), against the labelled people (IoU >= 0.5, IPHD matching); an "
        f"unmatched box goes to the person it overlaps most (IoU >= {TOUCH_IOU}).", "",
        "| detections | count | share |", "|---|---|---|",
        f"| matched a labelled person | {summary['matched']} | {pct(fr['matched'])} |",
        f"| second box on a matched person | {summary['second_box']} | "
        f"{pct(fr['second_box'])} |",
        f"| loose box on an unmatched person (IoU < 0.5) | {summary['loose_box']} | "
        f"{pct(fr['loose_box'])} |",
        f"| on a person the label rule leaves out | {summary['unlabelled_person']} | "
        f"{pct(fr['unlabelled_person'])} |",
        f"| background (on no one) | {summary['background']} | {pct(fr['background'])} |",
        "", "| labelled people by visibility | labelled | found | recall |", "|---|---|---|---|",
    ]
    for name, row in summary["recall_by_visibility"].items():
        lines.append(f"| {name.replace('_', ' ')} | {row['labelled']} | {row['found']} | "
                     f"{pct(row['recall'])} |")
    pos = summary["position"]
    lines += [
        "",
        "Position of the matched detections: ground distance (x, z of the depth optical frame) "
        "from the person's body centre, which lies about 0.1 m behind the body surface the "
        "depth sees.", "",
        "| with a position | without (NaN) | median (m) | p90 (m) | over 0.5 m | over 1 m |",
        "|---|---|---|---|---|---|",
        f"| {pos['with_position']} | {pos['no_position']} | {metres(pos['median_m'])} | "
        f"{metres(pos['p90_m'])} | {pct(pos['over_0.5_m'])} | {pct(pos['over_1_m'])} |",
        "",
    ]
    if pos.get("truth_without_position"):
        lines += [
            f"{pos['truth_without_position']} matched detections are not in this table: their "
            "ground truth has no 3D position (2D annotations, as iphd-eval import-mot writes "
            "them), so there is nothing to compare a position with.", "",
        ]
    return lines
