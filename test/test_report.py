"""Artefact helpers: PLY round trip, montage layout, video, and the summary maths on made-up
inputs whose answers are known."""
import math

import cv2
import numpy as np
import pytest

from midas_ros import report


def read_ply(path):
    """An independent reader of the binary PLY header and body (not the writer's dtype)."""
    with open(path, 'rb') as stream:
        lines = []
        while not lines or lines[-1] != 'end_header':
            lines.append(stream.readline().decode('ascii').strip())
        body = stream.read()
    assert lines[0] == 'ply' and lines[1] == 'format binary_little_endian 1.0'
    count = int(next(line.split()[2] for line in lines if line.startswith('element vertex')))
    props = [tuple(line.split()[1:]) for line in lines if line.startswith('property')]
    assert props == [('float', 'x'), ('float', 'y'), ('float', 'z'), ('uchar', 'red'),
                     ('uchar', 'green'), ('uchar', 'blue')]
    stride = 3 * 4 + 3
    assert len(body) == count * stride
    raw = np.frombuffer(body, np.uint8).reshape(count, stride)
    xyz = raw[:, :12].copy().view('<f4')
    return xyz, raw[:, 12:]


def test_ply_round_trip_keeps_valid_points_only(tmp_path):
    rng = np.random.default_rng(3)
    xyz = rng.uniform(-5, 5, (4, 6, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    xyz[0, 0, 2] = np.nan
    xyz[3, 5] = np.nan
    xyz[2, 1, 0] = np.inf
    path = tmp_path / 'cloud.ply'
    assert report.write_ply(path, xyz, rgb) == 24 - 3
    points, colors = read_ply(path)
    valid = np.isfinite(xyz).all(axis=2)
    np.testing.assert_array_equal(points, xyz[valid])
    np.testing.assert_array_equal(colors, rgb[valid])


def test_ply_without_colour_is_grey(tmp_path):
    path = tmp_path / 'grey.ply'
    report.write_ply(path, np.ones((2, 2, 3), np.float32))
    _, colors = read_ply(path)
    assert (colors == 200).all()


def test_montage_places_panels_side_by_side_under_titles():
    red = np.zeros((40, 60, 3), np.uint8)
    red[..., 2] = 255
    green = np.zeros((20, 20, 3), np.uint8)     # half the height: scaled to 40x40
    green[..., 1] = 255
    picture = report.montage([red, green], ['a', 'b'])
    top = report.PANEL_TITLE_HEIGHT
    assert picture.shape == (40 + top, 60 + 40, 3)
    np.testing.assert_array_equal(picture[top:, :60], red)
    assert (picture[top:, 60:] == (0, 255, 0)).all()
    assert picture[:top].any()                   # the titles are drawn
    with pytest.raises(ValueError, match='one title per panel'):
        report.montage([red], ['a', 'b'])


def test_labels_never_overlap_each_other_and_stay_in_the_image():
    """The report's picture: neighbouring and stacked boxes whose labels would collide (as
    'person_3 no depth (true 2.86)' over 'box_1 1.09 m (true 3.86)' did)."""
    rng = np.random.default_rng(4)
    image = np.zeros((480, 640, 3), np.uint8)
    boxes = [report.LabelledBox(300, 200, 360, 300, 'person_3', None, 2.86),
             report.LabelledBox(305, 204, 380, 320, 'box_1', 1.09, 3.86),
             report.LabelledBox(0, 0, 40, 40, 'corner', 5.0, 5.1),
             report.LabelledBox(600, 460, 639, 479, 'edge', 7.25, None)]
    for k in range(20):
        u, v = rng.uniform(0, 600), rng.uniform(0, 440)
        boxes.append(report.LabelledBox(u, v, u + 40, v + 40, f'thing_{k}', 3.0 + k, 3.1 + k))
    sizes = [(190, 18)] * len(boxes)
    spots = report.place_labels(boxes, sizes, (640, 480))
    assert all(spot is not None for spot in spots)
    for i, a in enumerate(spots):
        assert 0 <= a[0] and a[2] <= 640 and 0 <= a[1] and a[3] <= 480, a
        for b in spots[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    # An uncrowded label sits right above its box.
    assert spots[0] == (300, 200 - 18, 490, 200)
    # Drawn: each label's filled background is where it was placed.
    drawn = report.draw_boxes(image, boxes[:2])
    assert drawn[190, 480].any() or drawn[190, 310].any()


def test_random_weights_are_said_on_the_picture_itself():
    panel = np.zeros((40, 400, 3), np.uint8)
    plain = report.montage([panel], ['a'])
    marked = report.montage([panel], ['a'], banner=report.RANDOM_WEIGHTS_BANNER)
    top = report.PANEL_TITLE_HEIGHT
    assert marked.shape == (plain.shape[0] + top, plain.shape[1], 3)
    np.testing.assert_array_equal(marked[top:], plain)
    bar = marked[:top].reshape(-1, 3)
    assert (bar == (0, 0, 200)).all(axis=1).mean() > 0.5        # a red bar
    assert (bar > 200).all(axis=1).sum() > 50                    # with white text


def test_boxes_are_drawn_on_a_copy():
    image = np.zeros((100, 100, 3), np.uint8)
    drawn = report.draw_boxes(image, [report.LabelledBox(20, 30, 60, 80, 'box_1', 2.5, 2.0)])
    assert not image.any()
    assert drawn[80, 40].any() and drawn[55, 20].any()    # bottom and left edges
    assert not drawn[55, 40].any()                         # inside stays untouched


def test_video_has_every_frame(tmp_path):
    writer = report.VideoWriter(tmp_path / 'clip', fps=5)
    for value in range(0, 250, 50):
        writer.write(np.full((48, 64, 3), value, np.uint8))
    writer.close()
    capture = cv2.VideoCapture(str(writer.path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    assert writer.path.suffix in ('.mp4', '.avi') and len(frames) == 5
    assert [int(round(f.mean() / 50)) for f in frames] == [0, 1, 2, 3, 4]


def test_percentiles_of_a_known_series():
    values = list(range(1, 101)) + [math.nan, math.inf]
    result = report.percentiles(values)
    assert result == pytest.approx({'p50': 50.5, 'p90': 90.1, 'p99': 99.01})
    assert report.percentiles([]) == {'p50': None, 'p90': None, 'p99': None}


def test_frame_rate_counts_intervals():
    times = [int(i * 1e8) for i in range(11)]          # 11 events over 1 s
    assert report.frame_rate(reversed(times)) == pytest.approx(10.0)
    assert report.frame_rate(times[:1]) == 0.0


def test_relative_errors_match_by_id():
    estimates = {'a': 2.2, 'b': 1.0, 'c': math.nan, 'only_estimated': 3.0}
    truths = {'a': 2.0, 'b': 2.0, 'c': 1.0, 'only_true': 1.0}
    assert report.relative_errors(estimates, truths) == pytest.approx([0.1, 0.5])


def test_depth_abs_rel_uses_pixels_valid_in_both():
    truth = np.full((4, 4), 2.0, np.float32)
    depth = truth * 1.25
    depth[0] = np.nan                  # a quarter without depth
    truth[1, 0] = np.nan               # a pixel without truth
    error, coverage = report.depth_abs_rel(depth, truth)
    assert error == pytest.approx(0.25)
    assert coverage == pytest.approx(11 / 15)
    assert report.depth_abs_rel(np.full((2, 2), np.nan), np.ones((2, 2))) == (None, 0.0)


def test_summary_text_names_every_number():
    summary = {
        'model': 'm', 'frames': {'source': 10, 'depth': 9, 'obstacles': 8,
                                 'processed_fraction': 0.9}, 'fps': 7.5,
        'latency_ms': {'depth': {'p50': 80.0, 'p90': 90.0, 'p99': None},
                       'obstacles': {'p50': 85.0, 'p90': 95.0, 'p99': 99.0}},
        'scale_fit': {'mode': 'ground_plane', 'inlier_ratio': 0.8, 'residual': 0.05,
                      'accepted_fraction': 0.75, 'samples': 4},
        'depth_error': {'median_abs_rel': 0.1, 'frames': 9},
        'obstacle_distance_error': {'median_abs_rel': 0.2, 'matched': 12},
    }
    text = '\n'.join(report.format_summary(summary))
    for expected in ('10 published, 9 with depth, 8 with obstacles', '90% of the camera',
                     '7.5 FPS',
                     '80.0/90.0/- ms', 'inlier ratio 0.80', 'accepted 75% of 4',
                     'abs rel 0.100', 'error 0.200 over 12'):
        assert expected in text
