"""Ground truth of one person in one depth frame, shared by the simulator and the dataset IO."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PersonTruth:
    """Where one person is in one depth frame.

    Attributes:
        pid: identity id, unique within a dataset (the same person keeps it across frames and
            sequences).
        box_xyxy: (x1, y1, x2, y2) box of the person's visible pixels in depth-image pixels
            (x2, y2 exclusive edges, so a one-pixel person at column 5 spans 5..6).
        visibility: visible fraction of the person's in-image silhouette, 0..1 (1 = nothing in
            front of them).
        position_m: (x, y, z) of the body centre (mid-pelvis) in the depth optical frame, metres.
        velocity_mps: (x, y, z) velocity of the body centre in the depth optical frame, m/s.
    """

    pid: int
    box_xyxy: tuple[float, float, float, float]
    visibility: float
    position_m: tuple[float, float, float]
    velocity_mps: tuple[float, float, float] = (0.0, 0.0, 0.0)
