"""Pictures: the tracks' image shows each id in a colour of its own."""

import numpy as np

from iphd.tracking.tracker import TrackState
from iphd.viz import render_tracks_image, track_colour


def _track(track_id, state, box):
    return TrackState(track_id, state, 0.9, np.zeros(3), np.zeros(3),
                      None if box is None else np.asarray(box, float), 1.0, 0.0, None)


def test_each_track_box_is_drawn_in_its_ids_colour_over_grey_depth():
    depth = np.full((120, 160), 4000, np.uint16)  # 4 m of 8: mid grey
    tracks = [_track(3, "confirmed", (10, 20, 50, 100)), _track(8, "tentative", (90, 30, 130, 110)),
              _track(5, "lost", None)]
    image = render_tracks_image(depth, tracks, (160, 120))
    assert image.shape == (120, 160, 3) and image.dtype == np.uint8
    assert tuple(image[60, 70]) == (127, 127, 127)  # between the boxes: depth in grey
    # Confirmed: a 2 px edge in id 3's colour; tentative: 1 px in id 8's.
    assert tuple(image[60, 10]) == tuple(image[60, 11]) == track_colour(3)
    assert tuple(image[70, 90]) == track_colour(8) and tuple(image[70, 91]) != track_colour(8)
    # The lost track has no box: its colour is nowhere.
    assert len({track_colour(3), track_colour(8), track_colour(5)}) == 3
    assert not np.all(image == track_colour(5), axis=-1).any()


def test_without_a_depth_frame_the_tracks_are_drawn_on_black():
    image = render_tracks_image(None, [_track(1, "confirmed", (0, 0, 30, 40))], (64, 48))
    assert image.shape == (48, 64, 3)
    # (Row 30 of the left edge: below the label, whose anti-aliased pixels vary by OpenCV.)
    assert tuple(image[40, 60]) == (0, 0, 0) and tuple(image[30, 0]) == track_colour(1)


def test_neighbouring_ids_get_colours_far_apart():
    colours = np.array([track_colour(i) for i in range(1, 11)], float)
    nearest = min(np.abs(colours[i] - colours[i + 1]).sum() for i in range(9))
    assert nearest > 100
