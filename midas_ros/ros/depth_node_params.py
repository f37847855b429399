"""depth_node's parameters: one table, the single source of the defaults ``config/depth_node.yaml``
documents (test_parameters.py keeps them in step)."""
from dataclasses import replace

from midas_ros.models.registry import list_models
from midas_ros.scale import MODES as SCALE_MODES
from midas_ros.ros.lifecycle import AUTOSTART
from midas_ros.ros.navigation_outputs import NAVIGATION_PARAMS
from midas_ros.ros.parameters import Param, camera_names  # noqa: F401 (re-exported)
from midas_ros.ros.qos import QOS_NAMES, SUBSCRIPTION_QOS_NAMES

ANCHOR_TYPES = ('scan', 'range', 'points', 'depth')
DEVICE_PATTERN = r'auto|cpu|cuda(:[0-9]+)?'

DEPTH_NODE_PARAMS = (
    AUTOSTART,      # lifecycle: configure + activate at start-up (midas_ros/ros/lifecycle.py)
    Param('cameras', [], 'names of the cameras this node serves with one network: camera '
          "'front' reads front/image and front/camera_info and publishes front/depth/*; each "
          'has every per-camera parameter (camera.*, frame_id, max_rate, image.*, scale.*, '
          'depth.*, colormap.*, cloud.*, scan.*, filter.*, obstacle_points.*) as '
          "front.<parameter>, defaulting to the node's own; empty: one camera on image, "
          'camera_info -> depth/*',
          read_only=True),
    # Model and inference (read at start; change needs a restart).
    Param('model.name', 'midas_v21_small_256', 'model: a MiDaS variant or a Depth Anything V2 '
          'checkpoint (relative, or metric: metres)', choices=tuple(list_models()),
          read_only=True),
    Param('model.input_size', 0, 'network input size of Depth Anything V2 models (short side, '
          'a multiple of 14; smaller is faster and less accurate); 0: the official 518 (MiDaS '
          'models: their own size, only 0 is accepted)', min=0, max=4088, read_only=True),
    Param('model.max_depth', 0.0, 'metric models: metres of the full-scale network output '
          "(the official max_depth); 0: the checkpoint's (20 Hypersim/indoor, 80 "
          'VKITTI/outdoor)', min=0.0, max=10000.0, read_only=True),
    Param('model.weights', '', 'checkpoint file; empty: search model.weights_dir, '
          '$MIDAS_WEIGHTS_DIR and the torch hub cache', read_only=True),
    Param('model.weights_dir', '', 'folder holding official checkpoints', read_only=True),
    Param('model.pretrained', True, 'load official weights; false: random weights (tests, '
          'demos; depth is meaningless)', read_only=True),
    Param('model.allow_download', False, 'download the official checkpoint if not found',
          read_only=True),
    Param('model.backend', 'auto', 'runtime of the network: auto (CPU: the fastest installed '
          'runtime matching torch fp32, openvino > onnxruntime > torch; CUDA: torch), torch, '
          'onnxruntime or openvino (CPU), tensorrt (CUDA); exported graphs are cached per '
          'variant, input size, precision and weights',
          choices=('auto', 'torch', 'onnxruntime', 'openvino', 'tensorrt'), read_only=True),
    Param('model.backend_fallback', False, 'fall back to torch (with a warning) when the '
          'backend cannot run', read_only=True),
    Param('device', 'auto', 'inference device: auto (CUDA if present, else cpu), cpu, cuda '
          '(the current GPU) or cuda:N (GPU N)', pattern=DEVICE_PATTERN, read_only=True),
    Param('inference.precision', 'auto', 'auto: by the device (CPU: fp32; CUDA: fp16 for '
          'variants safe in it, else bf16 on sm_80 and later, else fp32); the choice and why '
          'are logged at start. int8 (CPU, backend openvino, onnxruntime or auto; never chosen '
          'by auto): the graph quantized after training on inference.calibration, used only '
          'once its error against fp32 is measured within inference.int8_max_error; fp32 '
          'serves meanwhile', choices=('auto', 'fp32', 'fp16', 'bf16', 'int8'), read_only=True),
    Param('inference.calibration', '', 'int8 calibration images: a folder of images, or an '
          'MCAP recording and its image topic (path.mcap:/topic; path.mcap alone: its only '
          'image topic); empty: the first inference.calibration_frames frames received (with '
          'several cameras: from every camera, of the first network input size to fill). '
          "Images must have the camera's aspect ratio (with several sizes: that of "
          'inference.warmup_size); the int8 graph serves that network input size, cameras of '
          'another run fp32', read_only=True),
    Param('inference.calibration_frames', 32, 'int8: calibration images used (spread over '
          'a folder or recording); every 4th is held out to measure the int8 error', min=2,
          max=1000, read_only=True),
    Param('inference.int8_max_error', 0.1, 'int8: the largest accepted 95th percentile of '
          "the relative error of int8's relative inverse depth against fp32 (each frame "
          'aligned by scale and shift) on the held-out calibration frames; above it fp32 '
          'stays, with one warning', min=0.0, max=1000.0, read_only=True),
    Param('inference.channels_last', True, 'channels-last memory format on CUDA',
          read_only=True),
    Param('inference.compile', False, 'torch.compile the network (slow first frame)',
          read_only=True),
    Param('inference.cpu_threads', 0, "CPU threads of each frame's network (torch, ONNX "
          'Runtime, OpenVINO); 0: the CPUs this process may use (affinity mask and cgroup '
          'quota) divided among the frames in parallel', min=0, max=256, read_only=True),
    Param('inference.parallel_frames', 0, 'frames whose networks may run at the same time, '
          'each in its own thread with its own session of the exported graph (more frames/s '
          'where the CPU is the limit; the frames share the cores); 0: auto (2 on a '
          'CPU with onnxruntime or openvino, 2 or more usable CPUs and up to 256 MiB of '
          'weights; else 1)',
          min=0, max=8, read_only=True),
    Param('inference.interop_threads', 0, "torch's inter-op threads; 0: 1 (MiDaS is one "
          'chain of operators)', min=0, max=256, read_only=True),
    Param('inference.opencv_threads', 0, "OpenCV's threads; 0: the CPUs this process may use",
          min=0, max=256, read_only=True),
    Param('inference.warmup_size', [640, 480], 'image size [width, height] warmed up in '
          'configure, before subscribing (graph exported or loaded, backend parity check, lazy '
          'kernels); [0, 0]: none. Other sizes warm up on their first image. Set it to the '
          "camera's size, or [0, 0] with a TensorRT engine not built for it yet (minutes on a "
          'Jetson)', read_only=True),
    Param('inference.max_batch', 4, 'CUDA: frames of the same size from different cameras '
          'waiting at the same time run as one batch of at most this many (1: never batch; '
          'the CPU runs frames in parallel lanes instead)', min=1, max=16, read_only=True),
    # Input.
    Param('max_rate', 0.0, 'frames per second at most taken from this camera (Hz; 0: as '
          'many as the network can do); the rest of the network goes to the other cameras',
          min=0.0, max=1000.0),
    Param('image.transport', 'raw', "raw: subscribe 'image'; compressed: '<image as "
          "remapped>/compressed' (as image_transport)",
          choices=('raw', 'compressed'), read_only=True),
    Param('image.qos', 'sensor_data', 'QoS of the image and camera_info subscriptions: '
          "sensor_data (best effort) matches every publisher; 'auto' follows the publishers "
          '(reliable when they all are: no loss of large frames over UDP)',
          choices=SUBSCRIPTION_QOS_NAMES, read_only=True),
    Param('output.qos', 'reliable', 'QoS of the published images, cloud and scan (a reliable '
          'publisher matches reliable and best-effort subscribers)', choices=QOS_NAMES,
          read_only=True),
    Param('camera.hfov_deg', 60.0, 'horizontal field of view assumed until a CameraInfo '
          'arrives (principal point at the image centre)', min=1.0, max=179.0),
    Param('frame_id', '', 'frame of the outputs; empty: the image header frame_id'),
    # Metric scale: depth = 1 / (a * relative + b); a metric model's metres z enter as 1 / z.
    Param('scale.mode', 'auto', 'how the network output becomes metres: auto (metric for a '
          "metric model, else uncalibrated), metric (the metric model's metres), "
          'uncalibrated, fixed, ground_plane, sparse (with a metric model these two fit one '
          "factor to its metres, correcting a camera unlike the checkpoint's training one)",
          choices=SCALE_MODES),
    Param('scale.a', 1.0, 'fixed mode: depth = 1 / (a * relative + b)', min=-1e9, max=1e9),
    Param('scale.b', 0.0, 'fixed mode: offset in inverse metres', min=-1e9, max=1e9),
    Param('scale.uncalibrated_median_depth', 3.0, 'uncalibrated mode: metres assigned to the '
          'median pixel of each frame', min=0.01, max=1000.0),
    # The floor: the ground_plane scale and the navigation outputs (depth/obstacle_points,
    # the height_band scan) in every scale.mode.
    Param('scale.camera_height', 1.0, 'floor (ground_plane mode, obstacle_points, height_band '
          'scan): optical centre height above the floor (m)', min=0.01, max=100.0),
    Param('scale.camera_pitch_deg', 0.0, 'floor: camera pitch, positive looking down',
          min=-89.0, max=89.0),
    Param('scale.camera_roll_deg', 0.0, 'floor: camera roll, positive clockwise as seen from '
          'behind the camera', min=-89.0, max=89.0),
    Param('scale.ground_frame', '', 'floor: frame whose z = 0 plane is the floor '
          '(e.g. base_footprint); the camera height, pitch and roll then come from TF at each '
          "image's stamp (ground_frame -> image frame), the three parameters above only when "
          'TF cannot give them; empty: the parameters'),
    Param('scale.floor_rows', 0.35, 'ground_plane mode: bottom fraction of the image rows '
          'that may show floor', min=0.01, max=1.0),
    Param('scale.anchor_type', 'scan', 'sparse mode: message type of the metric anchors on '
          "'anchors' (LaserScan, Range, PointCloud2 or a sparse depth Image)",
          choices=ANCHOR_TYPES, read_only=True),
    Param('scale.anchor_extrinsic', [0.0, 0.0, 0.0, 0.0, 0.0, 0.0], 'sparse mode: pose of the '
          'anchor sensor in the camera body frame (x forward, y left, z up, as camera_link), '
          '[x, y, z, roll, pitch, yaw] (m, rad); zeros: a forward-looking sensor at the camera. '
          "Used when TF has no transform from the anchor message's frame_id to the image frame "
          "at the anchors' stamp (or the frame_id is empty)"),
    Param('scale.anchor_timeout', 0.5, 'sparse mode: anchors older than this (s) are not used',
          min=0.0, max=60.0),
    Param('scale.time_constant', 1.0, 'smoothing time constant of the scale (s); 0: none',
          min=0.0, max=600.0),
    Param('scale.min_inlier_ratio', 0.3, 'a fit with fewer inliers keeps the last good scale',
          min=0.0, max=1.0),
    Param('scale.max_residual', 0.1, 'a fit with a larger median relative residual keeps the '
          'last good scale', min=0.0, max=10.0),
    Param('depth.min', 0.1, 'nearer depths are published as -inf (REP 118 too near) (m)',
          min=0.0, max=1000.0),
    Param('depth.max', 20.0, 'farther depths are published as +inf (REP 118 beyond range) '
          '(m)', min=0.01, max=10000.0),
    # Outputs.
    Param('colormap.max_depth', 0.0, 'depth shown at the far end of the colour map (m); 0: '
          'per-frame robust range', min=0.0, max=10000.0),
    Param('cloud.enabled', True, 'publish depth/points'),
    Param('cloud.decimation', 1, 'keep every n-th pixel in each direction of the organized '
          'cloud (depth/points is (H/n) x (W/n))', min=1, max=32),
    Param('cloud.color', True, 'add the rgb field to depth/points'),
    Param('scan.enabled', False, 'publish depth/scan (sensor_msgs/LaserScan)'),
    Param('scan.height', 1, 'image rows around the principal point row used for the scan',
          min=1, max=4096),
    Param('scan.range_min', 0.1, 'shorter ranges are reported as -inf (m)', min=0.0,
          max=1000.0),
    Param('scan.range_max', 10.0, 'longer ranges are reported as +inf (m)', min=0.01,
          max=10000.0),
    Param('scan.frame_id', 'camera_depth_frame', 'frame of depth/scan: origin at the camera, '
          'x forward, z up (as depthimage_to_laserscan\'s output_frame); height_band: bearings '
          'and ranges in this frame through TF (e.g. a level base_link), else in the camera\'s '
          'level frame (x: the optical axis along the floor, z up)'),
    # Edge filter, obstacle cloud, height-band scan (shared with depth_cloud_node).
    *NAVIGATION_PARAMS,
    Param('diagnostics.period', 1.0, 'seconds between /diagnostics messages', min=0.1,
          max=60.0),
)

# The parameter groups that belong to one camera stream. With ``cameras`` set, every camera has
# its own ``<camera>.<name>`` copy of each parameter of these groups (a group is a name or a
# prefix before '.'), defaulting to the node's value; the rest (model, inference, output QoS,
# diagnostics) is shared. A new per-stream group is one entry here.
STREAM_GROUPS = ('camera', 'frame_id', 'max_rate', 'image', 'scale', 'depth', 'colormap',
                 'cloud', 'scan', 'filter', 'obstacle_points')


def is_stream_param(name):
    """Whether parameter ``name`` (unprefixed) belongs to one camera stream."""
    return any(name == group or name.startswith(group + '.') for group in STREAM_GROUPS)


STREAM_PARAMS = tuple(param for param in DEPTH_NODE_PARAMS if is_stream_param(param.name))


def camera_rows(camera, values):
    """``camera``'s own parameter rows: ``<camera>.<name>`` for every per-stream parameter,
    defaulting to the node's value in ``values``."""
    return tuple(replace(param, name=f'{camera}.{param.name}', default=values[param.name])
                 for param in STREAM_PARAMS)


def camera_values(values, camera, inherited=()):
    """The (unprefixed) parameter values one camera works with: the node's, with the
    camera's own ``<camera>.<name>`` values for the per-stream ones, except those in
    ``inherited`` (names the camera takes from the node). ``camera`` '' : the node's."""
    node = {param.name: values[param.name] for param in DEPTH_NODE_PARAMS}
    if camera:
        node.update({param.name: values[f'{camera}.{param.name}'] for param in STREAM_PARAMS
                     if param.name not in inherited})
    return node
