"""The synthetic scene against geometry computed here, independently of the renderer."""
import math

import numpy as np
import pytest

from midas_ros.synthetic import CameraPose, SceneConfig, SceneObject, SyntheticScene

SMALL = SceneConfig(width=160, height=120, hfov_deg=70.0, seed=3)


def level_pose(x=0.0, y=0.0, height=0.5, pitch_deg=0.0):
    """A camera looking along world +x."""
    return CameraPose.from_yaw_pitch(x, y, height, 0.0, math.radians(pitch_deg))


def crate(center_x, center_y=0.0, size=(1.0, 1.0, 1.0), name='box_0'):
    return SceneObject(name, 'box', (center_x, center_y), size)


def test_same_seed_and_index_render_identical_frames_anywhere():
    first, second = SyntheticScene(SMALL).render(17), SyntheticScene(SMALL).render(17)
    np.testing.assert_array_equal(first.rgb, second.rgb)
    np.testing.assert_array_equal(first.depth, second.depth)
    assert first.objects == second.objects
    other_seed = SyntheticScene(SceneConfig(width=160, height=120, seed=4)).render(17)
    assert not np.array_equal(first.rgb, other_seed.rgb)
    assert not np.array_equal(first.rgb, SyntheticScene(SMALL).render(18).rgb)


def test_frame_types_and_the_path_loops():
    scene = SyntheticScene(SMALL)
    frame = scene.render(5)
    assert frame.rgb.shape == (120, 160, 3) and frame.rgb.dtype == np.uint8
    assert frame.depth.shape == (120, 160) and frame.depth.dtype == np.float32
    assert np.all(np.isfinite(frame.depth)) and np.all(frame.depth > 0)   # a closed room
    np.testing.assert_array_equal(frame.depth, scene.render(5 + SMALL.loop_frames).depth)
    assert scene.intrinsics.fx == pytest.approx(80.0 / math.tan(math.radians(35.0)))


def test_floor_depth_is_the_ray_plane_intersection():
    height, pitch_deg = 0.8, 12.0
    frame = SyntheticScene(SMALL, objects=()).render_pose(level_pose(-4.0, 0.0, height,
                                                                     pitch_deg))
    intr = frame.intrinsics
    pitch = math.radians(pitch_deg)
    rows = np.arange(90, 120)           # the near floor, below any wall
    # Optical z of the point where the ray through row v meets the floor plane z = 0.
    expected = height / (math.sin(pitch) + math.cos(pitch) * (rows - intr.cy) / intr.fy)
    np.testing.assert_allclose(frame.depth[rows], np.repeat(expected[:, None], 160, 1),
                               rtol=1e-5)


def test_wall_facing_the_camera_is_at_constant_depth():
    scene = SyntheticScene(SMALL, objects=())
    frame = scene.render_pose(level_pose(x=1.0, height=1.2))
    # The far wall x = 6 is perpendicular to the optical axis: depth 5 m across its whole face.
    np.testing.assert_allclose(frame.depth[40:80, 60:100], 5.0, rtol=1e-5)


def test_box_face_depth_box_and_position():
    scene = SyntheticScene(SMALL, objects=[crate(3.0)])
    frame = scene.render_pose(level_pose(height=0.5))
    intr = frame.intrinsics
    # Near face at x = 2.5 spans y in [-0.5, 0.5], z in [0, 1]; the camera sits at z = 0.5.
    u_edges = intr.cx + intr.fx * np.array([-0.5, 0.5]) / 2.5
    v_edges = intr.cy + intr.fy * np.array([-0.5, 0.5]) / 2.5
    (truth,) = frame.objects
    expected = (math.ceil(u_edges[0]), math.ceil(v_edges[0]),
                math.floor(u_edges[1]), math.floor(v_edges[1]))
    assert truth.box == expected
    u_min, v_min, u_max, v_max = truth.box
    np.testing.assert_allclose(frame.depth[v_min:v_max + 1, u_min:u_max + 1], 2.5, rtol=1e-5)
    # Just outside: the far wall to the side and above; the floor in front of it below.
    assert frame.depth[v_min, u_min - 1] > 2.6 and frame.depth[v_min - 1, u_max] > 2.6
    assert frame.depth[v_max + 1, u_max] < 2.5
    assert truth.visible_fraction == pytest.approx(1.0)
    np.testing.assert_allclose(truth.center_camera, (0.0, 0.0, 3.0), atol=1e-9)
    assert truth.center_size() == ((u_min + u_max) / 2, (v_min + v_max) / 2,
                                   u_max - u_min + 1, v_max - v_min + 1)


def test_occlusion_shrinks_boxes_and_hides_objects():
    front = crate(2.0, 0.3, name='front')
    half_hidden = crate(4.0, -0.3, (1.0, 1.0, 0.6), name='half_hidden')
    hidden = crate(5.0, 0.3, (0.5, 0.5, 0.5), name='hidden')   # exactly behind 'front'
    frame = SyntheticScene(SMALL, objects=[front, half_hidden, hidden]).render_pose(
        level_pose(height=0.5))
    truths = {truth.object_id: truth for truth in frame.objects}
    assert set(truths) == {'front', 'half_hidden'}
    assert truths['front'].visible_fraction == pytest.approx(1.0)
    assert 0.0 < truths['half_hidden'].visible_fraction < 0.9
    alone = SyntheticScene(SMALL, objects=[half_hidden]).render_pose(level_pose(height=0.5))
    (unoccluded,) = alone.objects
    assert unoccluded.visible_fraction == pytest.approx(1.0)
    clipped, full = truths['half_hidden'].box, unoccluded.box
    assert clipped[0] > full[0] and clipped[2] == full[2]   # world +y is image left: hidden


def test_objects_behind_the_camera_are_not_reported():
    objects = [crate(-3.0, name='behind'), crate(3.0, name='ahead')]
    frame = SyntheticScene(SMALL, objects=objects).render_pose(level_pose(height=0.5))
    assert [truth.object_id for truth in frame.objects] == ['ahead']


def test_default_scene_boxes_hold_the_projection_of_their_objects():
    scene = SyntheticScene(SMALL)
    intr = scene.intrinsics
    checked = 0
    for index in range(0, SMALL.loop_frames, 25):
        frame = scene.render(index)
        for truth in frame.objects:
            obj = next(o for o in scene.objects if o.object_id == truth.object_id)
            corners = frame.pose.to_optical(obj.corners())
            u_min, v_min, u_max, v_max = truth.box
            assert 0 <= u_min <= u_max < intr.width and 0 <= v_min <= v_max < intr.height
            assert 0.0 < truth.visible_fraction <= 1.0
            np.testing.assert_allclose(truth.center_camera,
                                       frame.pose.to_optical(obj.centroid()[None])[0])
            if np.all(corners[:, 2] > 0.05):
                u = intr.fx * corners[:, 0] / corners[:, 2] + intr.cx
                v = intr.fy * corners[:, 1] / corners[:, 2] + intr.cy
                # Visible pixels lie inside the projected hull's bounds.
                assert u.min() - 1 <= u_min and u_max <= u.max() + 1
                assert v.min() - 1 <= v_min and v_max <= v.max() + 1
                checked += 1
    assert checked >= 10


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match='camera_height'):
        SyntheticScene(SceneConfig(camera_height=5.0))
    with pytest.raises(ValueError, match='field of view'):
        SyntheticScene(SceneConfig(hfov_deg=180.0))
