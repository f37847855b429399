"""CameraInfo -> intrinsics as image_geometry's PinholeCameraModel reads a rectified image: the
projection from P, K only where P is unset, binning and ROI applied; the kinds of CameraInfo
drivers publish (P = K with D = 0, rectified P with D != 0, P zero, binning/ROI)."""
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo

from midas_ros.fusion import Box, fuse
from midas_ros.geometry import Intrinsics
from midas_ros.ros.conversions import (ConversionError, camera_info_to_intrinsics,
                                       intrinsics_to_camera_info, projection_is_set)

# The example: a calibrated camera's raw K and D, and P of its rectified image.
K = [620.0, 0.0, 332.0, 0.0, 618.0, 251.0, 0.0, 0.0, 1.0]
P = [500.0, 0.0, 310.0, 0.0, 0.0, 500.0, 235.0, 0.0, 0.0, 0.0, 1.0, 0.0]
D = [-0.28, 0.07, 0.001, -0.0005, 0.0]


def camera_info(k=K, p=P, d=D, width=640, height=480):
    return CameraInfo(width=width, height=height, distortion_model='plumb_bob', d=list(d),
                      k=list(k), r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0], p=list(p))


def test_rectified_p_with_distortion_gives_p():
    info = camera_info()
    assert projection_is_set(info)
    assert camera_info_to_intrinsics(info) == Intrinsics(640, 480, 500.0, 500.0, 310.0, 235.0)


def test_p_equal_to_k_without_distortion():
    intrinsics = Intrinsics(640, 480, 525.0, 524.0, 319.5, 239.5)
    info = intrinsics_to_camera_info(intrinsics)
    assert list(info.d) == [0.0] * 5 and info.p[0] == info.k[0]
    assert camera_info_to_intrinsics(info) == intrinsics


def test_p_zero_falls_back_to_k():
    info = camera_info(p=[0.0] * 12)
    assert not projection_is_set(info)
    assert camera_info_to_intrinsics(info) == Intrinsics(640, 480, 620.0, 618.0, 332.0, 251.0)


def test_nothing_calibrated_is_refused():
    with pytest.raises(ConversionError, match='focal'):
        camera_info_to_intrinsics(camera_info(k=[0.0] * 9, p=[0.0] * 12))


def test_binning_and_roi_apply_to_p():
    info = camera_info()
    info.binning_x = info.binning_y = 2
    assert camera_info_to_intrinsics(info) == Intrinsics(320, 240, 250.0, 250.0, 155.0, 117.5)
    info = camera_info()
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 100, 50, 400, 300
    assert camera_info_to_intrinsics(info) == Intrinsics(400, 300, 500.0, 500.0, 210.0, 185.0)
    info.binning_x = info.binning_y = 2
    assert camera_info_to_intrinsics(info) == Intrinsics(200, 150, 250.0, 250.0, 105.0, 92.5)


def test_an_obstacle_in_a_rectified_image_is_where_p_puts_it():
    """The issue's numbers: an object at (0.40, 0.20, 2.0) m, seen in image_rect (P), must not
    come out at (0.25, 0.11, 2.0) (K)."""
    intrinsics = camera_info_to_intrinsics(camera_info())
    u = intrinsics.cx + intrinsics.fx * 0.40 / 2.0      # 410
    v = intrinsics.cy + intrinsics.fy * 0.20 / 2.0      # 285
    depth = np.full((480, 640), 6.0, np.float32)
    depth[int(v) - 30:int(v) + 31, int(u) - 30:int(u) + 31] = 2.0
    obstacle, = fuse(depth, intrinsics, [Box(u, v, 61.0, 61.0)])
    # Within half a pixel at 2 m (the inner window has a whole number of pixels).
    np.testing.assert_allclose(obstacle.position, (0.40, 0.20, 2.0), atol=0.0021)
