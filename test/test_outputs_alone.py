"""An output that cannot be made costs only itself (DepthPipeline, DepthMessageBuilder): a scan
band outside the image, a cloud or a colour map that fails, leave every other product intact,
with the reason recorded; SkippedOutputs turns per-frame reasons into one report per change."""
import numpy as np
from sensor_msgs.msg import CameraInfo

from midas_ros.depth_pipeline import DepthPipeline, DepthSettings, SkippedOutputs
from midas_ros.geometry import Intrinsics
from midas_ros.ros.conversions import camera_info_to_intrinsics
from midas_ros.ros.depth_messages import DEPTH_TOPICS, DepthMessageBuilder, skipped_topics
from std_msgs.msg import Header
from test_depth_semantics import InverseDepthNetwork

WIDTH, HEIGHT = 640, 480
ALL = frozenset({'colormap', 'cloud', 'scan'})


def pipeline(**settings):
    depth = np.full((HEIGHT, WIDTH), 3.0, np.float32)
    settings = DepthSettings(**{'scale_mode': 'fixed', 'time_constant': 0.0,
                                'scan_enabled': True, **settings})
    return DepthPipeline(InverseDepthNetwork(depth), settings)


def process(pipe, intrinsics):
    return pipe.process(np.zeros((HEIGHT, WIDTH, 3), np.uint8), 'rgb', intrinsics, 1.0,
                        products=ALL)


def test_a_scan_band_outside_the_image_costs_only_the_scan():
    """The issue's example: scan.height 480 while cy = 200."""
    frame = process(pipeline(scan_height=480), Intrinsics(WIDTH, HEIGHT, 500, 500, 320, 200))
    assert frame.scan is None and 'does not fit' in frame.skipped['scan']
    assert np.allclose(frame.depth, 3.0)
    assert frame.points is not None and np.allclose(frame.points[..., 2], 3.0)
    assert frame.colormap is not None
    assert set(frame.skipped) == {'scan'}


def test_an_roi_that_puts_the_principal_row_outside_the_image():
    info = CameraInfo(width=1280, height=960, k=[600.0, 0, 640, 0, 600, 480, 0, 0, 1],
                      p=[600.0, 0, 640, 0, 0, 600, 480, 0, 0, 0, 1, 0])
    info.roi.x_offset, info.roi.y_offset = 300, 500          # cy' = 480 - 500 = -20
    info.roi.width, info.roi.height = WIDTH, HEIGHT
    intrinsics = camera_info_to_intrinsics(info)
    assert intrinsics.cy == -20
    frame = process(pipeline(), intrinsics)
    assert frame.scan is None and 'scan' in frame.skipped
    assert frame.points is not None and frame.colormap is not None


def test_a_failing_colormap_or_cloud_costs_only_itself(monkeypatch):
    pipe = pipeline()
    intrinsics = Intrinsics.from_fov(WIDTH, HEIGHT, 60.0)

    def broken(*args, **kwargs):
        raise RuntimeError('colour table lost')
    monkeypatch.setattr(pipe.camera._colorizer, 'colorize', broken)
    frame = process(pipe, intrinsics)
    assert frame.colormap is None and 'colour table lost' in frame.skipped['colormap']
    assert frame.points is not None and frame.scan is not None
    monkeypatch.setattr(pipe.camera._camera_for(intrinsics).backprojector, 'points', broken)
    frame = process(pipe, intrinsics)
    assert frame.points is None and set(frame.skipped) == {'colormap', 'cloud'}
    assert frame.scan is not None and np.isfinite(frame.scan.ranges).all()


def test_a_runtime_change_the_current_camera_cannot_take_costs_only_that_output():
    """Accepted (the camera may change), then skipped with its reason: not refused."""
    pipe = pipeline()
    camera = Intrinsics(WIDTH, HEIGHT, 500, 500, 320, 200)
    pipe.configure(DepthSettings(scale_mode='fixed', scan_enabled=True, scan_height=480),
                   camera)
    assert pipe.settings.scan_height == 480
    frame = process(pipe, camera)
    assert 'does not fit' in frame.skipped['scan'] and frame.points is not None


def test_message_builder_skips_only_the_broken_message(monkeypatch):
    frame = process(pipeline(scan_height=480), Intrinsics(WIDTH, HEIGHT, 500, 500, 320, 200))
    builder = DepthMessageBuilder()
    monkeypatch.setattr(builder.clouds[True], 'build', lambda *a: 1 / 0)
    messages = builder.build(frame, Intrinsics(WIDTH, HEIGHT, 500, 500, 320, 200), Header(),
                             'camera_depth_frame', DEPTH_TOPICS)
    assert set(messages) == {'depth/image', 'depth/relative', 'depth/colormap',
                             'depth/camera_info'}
    skipped = skipped_topics(frame, DEPTH_TOPICS, builder.problems)
    assert set(skipped) == {'depth/points', 'depth/scan'}
    assert 'ZeroDivisionError' in skipped['depth/points']


def test_skipped_outputs_report_each_change_once():
    tracker = SkippedOutputs()
    assert tracker.update(['depth/scan'], {'depth/scan': 'band'}) == ({'depth/scan': 'band'}, [])
    for _ in range(3):
        assert tracker.update(['depth/scan'], {'depth/scan': 'band'}) == ({}, [])
    # Not attempted (no subscriber): no news either way.
    assert tracker.update([], {}) == ({}, [])
    assert tracker.update(['depth/scan'], {'depth/scan': 'other'}) == (
        {'depth/scan': 'other'}, [])
    assert tracker.update(['depth/scan'], {}) == ({}, ['depth/scan'])
    assert tracker.reasons == {}
