"""camera_source end to end (own process, real DDS), its frame sources and calibration files."""
import math
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image
from vision_msgs.msg import Detection2DArray

from midas_ros.camera_calibration import (CameraCalibration, load_calibration,
                                          resolve_calibration_url, save_calibration)
from midas_ros.geometry import Intrinsics
from midas_ros.ros.conversions import image_to_array
from midas_ros.ros.qos import qos_profile
from midas_ros.synthetic import SceneConfig, SyntheticScene
from midas_ros.video_sources import SourceError, open_source
from ros_process import REPO, NodeProcess, RosTestNode, unique_namespace

CALIBRATOR_YAML = """\
image_width: 64
image_height: 48
camera_name: narrow_stereo
camera_matrix:
  rows: 3
  cols: 3
  data: [52.5, 0, 31.2, 0, 53.0, 23.9, 0, 0, 1]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [-0.2, 0.05, 0.001, -0.002, 0]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1, 0, 0, 0, 1, 0, 0, 0, 1]
projection_matrix:
  rows: 3
  cols: 4
  data: [50.0, 0, 31.0, 0, 0, 51.0, 24.0, 0, 0, 0, 1, 0]
"""


def write_images(folder, count=3, size=(64, 48)):
    """PNG frames named so that plain sorting would get their order wrong."""
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) for _ in range(count)]
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / f'frame{(i + 1) * 5}.png'), image)   # frame5, frame10, ...
    return images


# -- calibration files -------------------------------------------------------------------------

def test_calibrator_yaml_is_read(tmp_path):
    path = tmp_path / 'camera.yaml'
    path.write_text(CALIBRATOR_YAML)
    calibration = load_calibration(path)
    assert calibration.intrinsics == Intrinsics(64, 48, 52.5, 53.0, 31.2, 23.9)
    assert calibration.camera_name == 'narrow_stereo'
    assert calibration.distortion == (-0.2, 0.05, 0.001, -0.002, 0.0)
    assert calibration.projection_matrix()[:3] == (50.0, 0.0, 31.0)


def test_calibration_round_trip(tmp_path):
    original = CameraCalibration(Intrinsics(640, 480, 612.5, 611.0, 319.2, 241.7), 'front',
                                 'rational_polynomial', tuple(np.linspace(-0.3, 0.2, 8)))
    path = tmp_path / 'front.yaml'
    save_calibration(original, path)
    loaded = load_calibration(path)
    assert loaded.intrinsics == original.intrinsics
    assert loaded.distortion == pytest.approx(original.distortion)
    assert (loaded.camera_name, loaded.distortion_model) == ('front', 'rational_polynomial')
    assert loaded.projection_matrix() == original.projection_matrix()


@pytest.mark.parametrize('edit, field', [
    (lambda text: text.replace('camera_matrix:', 'camera_matrx:'), 'camera_matrix'),
    (lambda text: text.replace('image_width: 64', 'image_width: -64'), 'image_width'),
    (lambda text: text.replace('data: [52.5, 0, 31.2, 0, 53.0, 23.9, 0, 0, 1]',
                               'data: [52.5, 0, 31.2]'), 'camera_matrix'),
    (lambda text: text.replace('52.5', '0.0'), 'camera_matrix'),
    (lambda text: text.replace('cols: 4', 'cols: 3'), 'projection_matrix'),
    (lambda text: '- just\n- a list\n', 'not a camera calibration file'),
    (lambda text: 'image_width: [unclosed\n', 'not valid YAML'),
])
def test_wrong_calibration_format_is_one_line_value_error(tmp_path, edit, field):
    path = tmp_path / 'bad.yaml'
    path.write_text(edit(CALIBRATOR_YAML))
    with pytest.raises(ValueError, match=field) as error:
        load_calibration(path)
    assert '\n' not in str(error.value) and str(path) in str(error.value)


def test_calibration_urls(tmp_path):
    assert resolve_calibration_url(f'file://{tmp_path}/a.yaml') == tmp_path / 'a.yaml'
    assert resolve_calibration_url(str(tmp_path / 'b.yaml')) == tmp_path / 'b.yaml'
    resolved = resolve_calibration_url('package://midas_ros/config/camera_source.yaml')
    assert resolved.is_file()
    with pytest.raises(ValueError, match='scheme'):
        resolve_calibration_url('http://example.com/cam.yaml')


# -- frame sources -----------------------------------------------------------------------------

def test_image_folder_in_natural_order_and_rewind(tmp_path):
    images = write_images(tmp_path / 'frames')
    (tmp_path / 'frames' / 'notes.txt').write_text('not an image')
    with open_source(str(tmp_path / 'frames')) as source:
        assert (source.width, source.height, source.encoding) == (64, 48, 'bgr8')
        frames = list(source)
        assert [f.index for f in frames] == [0, 1, 2]
        for frame, image in zip(frames, images):
            np.testing.assert_array_equal(frame.image, image)
        source.rewind()
        np.testing.assert_array_equal(source.read().image, images[0])


def test_video_file_source(tmp_path):
    path = str(tmp_path / 'clip.avi')
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'MJPG'), 20.0, (64, 48))
    if not writer.isOpened():
        pytest.skip('this OpenCV build cannot write MJPG')
    levels = [30, 120, 220]
    for level in levels:
        writer.write(np.full((48, 64, 3), level, np.uint8))
    writer.release()
    with open_source(path) as source:
        assert (source.width, source.height, source.nominal_rate) == (64, 48, 20.0)
        frames = list(source)
        assert [round(float(f.image.mean())) for f in frames] == pytest.approx(levels, abs=3)
        assert [f.timestamp for f in frames] == pytest.approx([0.0, 0.05, 0.1])
        source.rewind()
        assert len(list(source)) == 3


def test_synthetic_source_carries_truth():
    with open_source('synthetic', 80, 60, 70.0, seed=2) as source:
        source.read()
        frame = source.read()
    expected = SyntheticScene(SceneConfig(width=80, height=60, seed=2)).render(1)
    assert frame.index == 1 and source.encoding == 'rgb8'
    np.testing.assert_array_equal(frame.image, expected.rgb)
    np.testing.assert_array_equal(frame.truth.depth, expected.depth)


@pytest.mark.parametrize('spec, message', [
    ('', 'no source given'),
    ('/dev/video97', 'no such device'),
    ('97', 'no such device'),
    ('/no/such/clip.mp4', 'no such file'),
])
def test_missing_sources_are_source_errors(spec, message):
    with pytest.raises(SourceError, match=message):
        open_source(spec)


def test_empty_folder_and_undecodable_video(tmp_path):
    with pytest.raises(SourceError, match='holds no images'):
        open_source(str(tmp_path))
    broken = tmp_path / 'broken.mp4'
    broken.write_bytes(b'\x00not a video' * 64)
    with pytest.raises(SourceError, match='cannot open'):
        open_source(str(broken))


# -- the node ------------------------------------------------------------------------------------

def collect_frames(source_args, topics, count, tmp_path, timeout=30.0):
    """Run camera_source under a fresh namespace: (received messages, exit code, its log)."""
    namespace = unique_namespace('cam')
    probe = RosTestNode()
    try:
        received = {topic: probe.collect(msg_type, f'{namespace}/{topic}',
                                         qos_profile('sensor_data', depth=50))
                    for topic, msg_type in topics.items()}
        # keep_alive: the last best-effort samples live in camera_source's shared-memory
        # segment; on a loaded machine the probe may take more than the default 1 s to read them.
        process = NodeProcess('camera_source', ['-r', f'__ns:={namespace}', '-p',
                                                'wait_for_subscribers:=1', '-p', 'keep_alive:=5.0',
                                                *source_args],
                              tmp_path)
        try:
            # Every image, and each other topic at least once: camera_source waits for an
            # 'image' subscriber only, the other topics' discovery may miss the first frames.
            probe.spin_until(lambda: len(received['image']) >= count and not process.alive()
                             and all(received.values()), timeout)
            process.process.wait(10.0)
            log = process.output()
        finally:
            exit_code = process.stop()
        return received, exit_code, log
    finally:
        probe.close()


def tuple_stamp(msg):
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def test_node_publishes_synthetic_frames_with_truth_and_ends(tmp_path):
    topics = {'image': Image, 'camera_info': CameraInfo, 'ground_truth/depth': Image,
              'ground_truth/detections': Detection2DArray}
    received, exit_code, log = collect_frames(
        ['-p', 'width:=160', '-p', 'height:=120', '-p', 'rate:=20.0', '-p', 'max_frames:=6',
         '-p', 'seed:=5', '-p', 'frame_id:=cam_optical'], topics, 6, tmp_path)
    assert exit_code == 0, log
    # camera_source holds the first frame until 'image' is subscribed; the other three topics
    # of the same subscriber are usually matched by then, but DDS does not promise it, so they
    # may miss the first frame: each message is checked against the frame of its stamp.
    assert len(received['image']) == 6
    for topic in topics:
        assert len(received[topic]) >= 4, topic
    scene = SyntheticScene(SceneConfig(width=160, height=120, hfov_deg=70.0, seed=5))
    intr = scene.intrinsics
    index_of = {tuple_stamp(m): i for i, m in enumerate(received['image'])}
    for image in received['image']:
        truth = scene.render(index_of[tuple_stamp(image)])
        assert (image.encoding, image.width, image.height) == ('rgb8', 160, 120)
        assert image.header.frame_id == 'cam_optical'
        np.testing.assert_array_equal(image_to_array(image)[0], truth.rgb)
    for info in received['camera_info']:
        assert info.header.frame_id == 'cam_optical' and tuple_stamp(info) in index_of
        assert list(info.k) == pytest.approx(intr.k())
        assert (info.width, info.height) == (160, 120)
    for depth in received['ground_truth/depth']:
        truth = scene.render(index_of[tuple_stamp(depth)])
        np.testing.assert_array_equal(image_to_array(depth)[0], truth.depth)
    for detections in received['ground_truth/detections']:
        truth = scene.render(index_of[tuple_stamp(detections)])
        assert [d.id for d in detections.detections] == [o.object_id for o in truth.objects]
        for detection, obj in zip(detections.detections, truth.objects):
            assert detection.results[0].hypothesis.class_id == obj.class_name
            assert detection.results[0].hypothesis.score == 1.0
            assert detection.bbox.size_x == obj.center_size()[2]
    stamps = [m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec for m in received['image']]
    assert np.mean(np.diff(stamps)) == pytest.approx(1.0 / 20.0, rel=0.3)


def test_node_plays_an_image_folder_with_a_calibration_file(tmp_path):
    images = write_images(tmp_path / 'frames')
    calibration = tmp_path / 'camera.yaml'
    calibration.write_text(CALIBRATOR_YAML)
    received, exit_code, log = collect_frames(
        ['-p', f'source:={tmp_path / "frames"}', '-p', 'rate:=10.0', '-p',
         f'camera_info_url:=file://{calibration}'],
        {'image': Image, 'camera_info': CameraInfo}, 3, tmp_path)
    assert exit_code == 0, log
    assert 'end of stream after 3 frames' in log
    assert [m.encoding for m in received['image']] == ['bgr8'] * 3
    for message, image in zip(received['image'], images):
        np.testing.assert_array_equal(image_to_array(message)[0], image)
    info = received['camera_info'][0]
    assert info.header.frame_id == 'camera_optical_frame'
    assert list(info.k) == pytest.approx([52.5, 0, 31.2, 0, 53.0, 23.9, 0, 0, 1])
    assert list(info.d) == pytest.approx([-0.2, 0.05, 0.001, -0.002, 0])


def test_the_process_stays_up_keep_alive_seconds_after_the_last_frame(tmp_path):
    """A best-effort sample over shared memory lives in the publisher's segment: the process
    must not go the moment it has published the last frame."""
    write_images(tmp_path / 'frames')
    namespace = unique_namespace('cam')
    probe = RosTestNode()
    try:
        images = probe.collect(Image, f'{namespace}/image', qos_profile('sensor_data', depth=10))
        process = NodeProcess('camera_source', [
            '-r', f'__ns:={namespace}', '-p', f'source:={tmp_path / "frames"}',
            '-p', 'rate:=20.0', '-p', 'wait_for_subscribers:=1', '-p', 'keep_alive:=2.0'],
            tmp_path)
        try:
            assert probe.spin_until(lambda: len(images) == 3, 30.0), process.output()
            last_frame = time.monotonic()
            assert probe.spin_until(lambda: not process.alive(), 15.0), process.output()
            assert time.monotonic() - last_frame >= 1.8, process.output()
        finally:
            assert process.stop() == 0
    finally:
        probe.close()


@pytest.mark.parametrize('case', ['empty_folder', 'missing_camera', 'missing_video',
                                  'bad_calibration'])
def test_bad_input_exits_nonzero_with_one_line(tmp_path, case):
    (tmp_path / 'empty').mkdir()
    write_images(tmp_path / 'frames', count=1)
    (tmp_path / 'bad.yaml').write_text('image_width: 64\nimage_height: 48\n')
    args = {
        'empty_folder': [f'source:={tmp_path / "empty"}'],
        'missing_camera': ['source:=/dev/video97'],
        'missing_video': [f'source:={tmp_path / "nothing.mp4"}'],
        'bad_calibration': [f'source:={tmp_path / "frames"}',
                            f'camera_info_url:={tmp_path / "bad.yaml"}'],
    }[case]
    ros_args = [part for arg in args for part in ('-p', arg)]
    result = subprocess.run([sys.executable, '-m', 'midas_ros', 'camera_source', '--ros-args',
                             *ros_args], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and '[ERROR]' in errors[0], result.stderr
    assert 'Traceback' not in result.stderr + result.stdout


def test_hfov_camera_info_for_sources_without_calibration():
    # What the node publishes for a folder or video without camera_info_url.
    intr = Intrinsics.from_fov(64, 48, 70.0)
    assert intr.hfov_deg() == pytest.approx(70.0)
    assert intr.fx == pytest.approx(32.0 / math.tan(math.radians(35.0)))


def test_synthetic_detector_relays_truth_with_the_image_header(tmp_path):
    namespace = unique_namespace('det')
    probe = RosTestNode()
    detector = NodeProcess('synthetic_detector', ['-r', f'__ns:={namespace}', '-p',
                                                  'classes:=person,box', '-p',
                                                  'latency_ms:=30.0'], tmp_path)
    source = None
    try:
        images = probe.collect(Image, f'{namespace}/image', qos_profile('sensor_data', 50))
        truths = probe.collect(Detection2DArray, f'{namespace}/ground_truth/detections',
                               qos_profile('sensor_data', 50))
        detections = probe.collect(Detection2DArray, f'{namespace}/detections',
                                   qos_profile('reliable', 50))
        # Hold the frames until both the probe and the detector listen to the truth.
        probe.spin_until(lambda: detector.alive() and probe.node.count_publishers(
            f'{namespace}/detections') == 1, 20.0)
        source = NodeProcess('camera_source', [
            '-r', f'__ns:={namespace}', '-p', 'width:=160', '-p', 'height:=120', '-p',
            'max_frames:=20', '-p', 'rate:=20.0', '-p', 'wait_for_subscribers:=1',
            '-p', 'wait_for_truth_subscribers:=2'], tmp_path)   # the probe and the detector
        probe.spin_until(lambda: probe.node.count_subscribers(
            f'{namespace}/ground_truth/detections') >= 2 or not source.alive(), 20.0)
        # Discovery between the three processes may cost the detector the first few frames.
        probe.spin_until(lambda: not source.alive(), 30.0)
        probe.spin_until(lambda: len(detections) >= 20, 1.0)   # the last ones are 30 ms late
        assert len(detections) >= 10, (len(images), len(truths), len(detections))
    finally:
        for process in (source, detector):
            if process is not None:
                process.stop()
        probe.close()
    stamps = {(m.header.stamp.sec, m.header.stamp.nanosec): m for m in images}
    by_stamp = {(m.header.stamp.sec, m.header.stamp.nanosec): m for m in truths}
    # Best-effort delivery may cost the probe an image or a truth the detector did get: check
    # every detection whose image and truth the probe saw too, and that most of them are.
    checked = [array for array in detections
               if (array.header.stamp.sec, array.header.stamp.nanosec) in stamps.keys() & by_stamp]
    assert len(checked) >= 10, (len(images), len(truths), len(detections))
    for array in checked:
        key = (array.header.stamp.sec, array.header.stamp.nanosec)
        assert array.header == stamps[key].header          # the image's stamp and frame_id
        expected = [d.id for d in by_stamp[key].detections
                    if d.results[0].hypothesis.class_id in ('person', 'box')]
        assert [d.id for d in array.detections] == expected
        for detection in array.detections:
            assert detection.results[0].pose.pose.position.z == 0.0   # 3D truth not leaked
    assert any(array.detections for array in detections)


def test_synthetic_replay_renders_once_and_plays_forwards_then_backwards(monkeypatch):
    from midas_ros.video_sources import SyntheticSource
    rendered = []
    real_render = SyntheticScene.render

    def counting_render(scene, index):
        rendered.append(index)
        return real_render(scene, index)
    monkeypatch.setattr(SyntheticScene, 'render', counting_render)
    source = SyntheticSource(SceneConfig(width=40, height=30, seed=3), replay_frames=3)
    frames = [source.read() for _ in range(7)]
    assert rendered == [0, 1, 2]                      # rendered once, at open
    assert [f.truth.index for f in frames] == [0, 1, 2, 1, 0, 1, 2]
    assert [f.index for f in frames] == list(range(7))
    expected = real_render(SyntheticScene(SceneConfig(width=40, height=30, seed=3)), 1)
    np.testing.assert_array_equal(frames[3].image, expected.rgb)
    np.testing.assert_array_equal(frames[3].truth.depth, expected.depth)
