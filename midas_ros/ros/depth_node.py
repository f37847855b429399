"""depth_node: camera images in; metric depth, colour map, point cloud, scan and CameraInfo out.

One node serves one camera or several (``cameras``) with one network. Per camera (relative
names, so ``__ns`` and remaps work; ``<cam>/`` is empty with ``cameras: []``):
  subscribed: ``<cam>/image`` (sensor_msgs/Image) or, with ``image.transport:=compressed``,
  ``<cam>/image/compressed``; ``<cam>/camera_info``; in sparse scale mode ``<cam>/anchors``
  (LaserScan | Range | PointCloud2 | Image, see ``scale.anchor_type``).
  published (``midas_ros.depth_outputs.DEPTH_OUTPUTS``, each with the input image's header):
  ``<cam>/depth/image`` (32FC1 metres, NaN = no reading), ``depth/relative``, ``depth/colormap``
  (bgr8), ``depth/camera_info``, ``depth/points`` (organized PointCloud2, depth edges NaN),
  ``depth/scan`` (LaserScan, when ``scan.enabled``; ``scan.mode`` rows or height_band),
  ``depth/obstacle_points`` (the obstacle cloud without the floor), ``depth/confidence``
  (32FC1 in [0, 1]); the last four from ``ros/navigation_outputs.py``, the module
  depth_cloud_node shares; and one DiagnosticStatus per camera on /diagnostics.
Every per-stream parameter (``depth_node_params.STREAM_GROUPS``) may be set per camera as
``<cam>.<name>``; it defaults to (and, until set, follows) the node's value.
TF (``ros/tf_frames.py``, when tf2_ros is installed): with ``scale.ground_frame`` set, the
ground_plane mode takes the floor from ``ground_frame -> image frame`` at each image's stamp;
sparse anchors are moved from their message's frame_id into the image frame at their stamp.

Layout: ``DepthNode`` (this module) holds what is shared: the network (``DepthNetwork``: model,
lanes, thread plan), the frame scheduler, the threads, parameters, lifecycle and TF;
``DepthCamera`` (``ros/depth_camera.py``) everything of one camera. Frames are networked in the
process's main thread (and, with ``inference.parallel_frames`` > 1, one more thread per extra
lane) while ROS callbacks run in a background executor thread (see ``main``); subscriptions
hand the serialized frames to a ``FairScheduler`` that keeps each camera's newest frame and
gives the network the cameras in turn (``<cam>.max_rate`` caps one); on CUDA, frames of one
size waiting together run as one batch (``inference.max_batch``). Each frame's outputs are made
in the ``outputs`` worker (``midas_ros.handoff``), overlapping the next network, and only for
outputs that have subscribers; with none, a frame is not even inferred.

A managed (lifecycle) node (``ros/lifecycle.py``): the model is built (and warmed up) on
configure, every camera's inputs are subscribed only while active, deactivate waits for the
frames in flight, the model is freed on cleanup; ``autostart`` (default true) walks to active.
"""
import contextlib
import gc
import threading

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.parameter import Parameter

from midas_ros.cpu_budget import prefer_passive_waiting
from midas_ros.depth_outputs import DEPTH_OUTPUTS
from midas_ros.depth_pipeline import DepthNetwork
from midas_ros.frame_scheduler import FairScheduler
from midas_ros.handoff import Handoff
from midas_ros.ros.conversions import ConversionError
from midas_ros.ros.depth_camera import DepthCamera
from midas_ros.ros.depth_node_params import (DEPTH_NODE_PARAMS, STREAM_PARAMS, camera_names,
                                             camera_rows, camera_values)
from midas_ros.ros.lifecycle import ManagedNode
from midas_ros.ros.node_main import run_node
from midas_ros.ros.parameters import declare_parameters, on_set_parameters
from midas_ros.ros.qos import qos_profile
from midas_ros.ros.tf_frames import FrameTransforms
from midas_ros.ros.time_jumps import on_time_jump_back

TAKE_TIMEOUT_S = 0.2    # how often an idle lane looks at the shutdown / deactivation flags


def warmup_size(values):
    """``inference.warmup_size`` as (width, height), or None for [0, 0]; ValueError if it is
    neither."""
    size = list(values['inference.warmup_size'])
    if size == [0, 0]:
        return None
    if len(size) != 2 or not all(isinstance(v, int) and 16 <= v <= 16384 for v in size):
        raise ValueError(f'inference.warmup_size must be [width, height] in pixels (16 to '
                         f'16384) or [0, 0] for none, got {size}')
    return tuple(size)


class DepthNode(ManagedNode):
    """One network serving every camera of ``cameras``; see the module docstring for topics.

    A managed (lifecycle) node: parameters are declared at creation, ``configure`` builds the
    network (model, backend, warm-up) and every camera's publishers, ``activate`` subscribes
    every camera and starts the per-frame work, ``deactivate`` unsubscribes and waits for the
    frames in flight (no inference while inactive), ``cleanup`` frees the model.
    """

    def __init__(self, **kwargs):
        super().__init__('depth_node', **kwargs)
        self.values = declare_parameters(self, DEPTH_NODE_PARAMS)
        names = camera_names(self.values)
        # A camera parameter not given at start-up follows the node's value until it is set
        # (``_inherited``: per camera, the names it takes from the node).
        self._inherited = {name: {p.name for p in STREAM_PARAMS
                                  if f'{name}.{p.name}' not in self._parameter_overrides}
                           for name in names}
        self._inherited[''] = set()
        table = list(DEPTH_NODE_PARAMS)
        for name in names:
            rows = camera_rows(name, self.values)
            self.values.update(declare_parameters(self, rows))
            table += rows
        self.cameras = [DepthCamera(self, name, camera_values(self.values, name,
                                                              self._inherited[name]))
                        for name in names or ['']]
        self._camera_named = {camera.name: camera for camera in self.cameras}
        self.scheduler = FairScheduler([camera.name for camera in self.cameras])
        for camera in self.cameras:
            self.scheduler.set_max_rate(camera.name, camera.values['max_rate'])
        self.tf = FrameTransforms(self)
        self.network = None         # built by configure, freed by cleanup
        self.pub_diagnostics = None
        self.warming_up = None      # (width, height) while the network warms up for that size
        # Held while frames are inferred (main thread, lane 0) / their outputs made and
        # published (the outputs worker): deactivate takes both, and stops the other lanes'
        # threads (``inference.parallel_frames``), so no frame is worked on after it returns.
        self._work_lock = threading.Lock()
        self._finish_lock = threading.Lock()
        self._warmup_lock = threading.Lock()    # lanes meeting a new image size at once
        self._lane_threads = []
        self._lanes_stop = threading.Event()
        self._outputs_stage = Handoff('depth_outputs')
        self._propagating = False
        self.add_on_set_parameters_callback(
            on_set_parameters(table, lambda: self.values, self._apply_parameters))
        self.add_post_set_parameters_callback(self._propagate_node_values)
        self._time_jumps = on_time_jump_back(self, self._forget_the_past)

    # ---------------------------------------------------------------- lifecycle
    def configure(self):
        """Build the network (model weights, backend, warm-up) and every camera's outputs."""
        values = self.values
        estimator = self._create_estimator(values)
        self.network = DepthNetwork(estimator, values['inference.max_batch'])
        output_qos = {name: qos_profile(values[name])
                      for name in {output.qos for output in DEPTH_OUTPUTS}}
        for camera in self.cameras:
            camera.configure(output_qos)
        self.pub_diagnostics = self.create_lifecycle_publisher(DiagnosticArray, '/diagnostics',
                                                               10)
        # The camera's size warmed up before subscribing (graph loaded or exported, the 'auto'
        # parity check, lazy kernels): a camera that waits for this subscriber loses no frames
        # to it. Another size warms up on its first image (``_warm_up``).
        size = warmup_size(values)
        if size is not None:
            self.network.warmup(*size)
        self.get_logger().info(
            f"depth_node ready: model {values['model.name']} on {estimator.device} "
            f'({estimator.backend}, {estimator.precision}: {estimator.precision_reason}) for '
            f'{self._camera_list()}; '
            + (f'warmed up for {size[0]}x{size[1]} images, ' if size else '')
            + 'another size warms up on its first image'
            + (f"; batches of up to {self.network.max_batch} frames of one size"
               if self.network.batching else '')
            + f"; weights {getattr(estimator, 'weights_path', None) or 'random'}")
        reason, threads = self._runtime()
        self.get_logger().info(f"backend {estimator.backend} (model.backend "
                               f"{values['model.backend']}): {reason}; {threads}")

    def activate(self):
        """Subscribe every camera; start the per-frame work and diagnostics."""
        for camera in self.cameras:
            camera.subscribe(lambda payload, name=camera.name: self.scheduler.put(name,
                                                                                  payload))
        self._diagnostics_timer = self.create_timer(self.values['diagnostics.period'],
                                                    self._publish_diagnostics)
        # Lane 0 is the main thread (``run``); the other lanes' threads live while active.
        self._lanes_stop.clear()
        self._lane_threads = [
            threading.Thread(target=self._work_loop, args=(lane, contextlib.nullcontext()),
                             name=f'depth_lane{lane}', daemon=True)
            for lane in range(1, self.network.lanes)]
        for thread in self._lane_threads:
            thread.start()
        topics = ', '.join(self.resolve_topic_name(camera.image_topic)
                           for camera in self.cameras)
        self.get_logger().info(f'depth_node active: subscribed to {topics}')

    def deactivate(self):
        """Unsubscribe every camera and wait for the frames in flight: no inference, no output
        after this."""
        self._stop_lanes()
        with self._work_lock, self._finish_lock:
            for camera in self.cameras:
                camera.unsubscribe()
            self.destroy_timer(self._diagnostics_timer)
            self.scheduler.clear()      # a waiting frame is stale once reactivated

    def cleanup(self):
        """Free the model (and its backend's memory) and the publishers."""
        with self._work_lock, self._finish_lock:
            for camera in self.cameras:
                with camera.lock:
                    camera.cleanup()
            if self.pub_diagnostics is not None:
                self.destroy_lifecycle_publisher(self.pub_diagnostics)
            self.pub_diagnostics = None
            device = self.network.estimator.device if self.network is not None else None
            self.network = None
        gc.collect()
        if str(device).startswith('cuda'):
            import torch
            torch.cuda.empty_cache()

    def _camera_list(self):
        named = [camera.name for camera in self.cameras if camera.name]
        return f"cameras {', '.join(named)}" if named else 'one camera'

    # ---------------------------------------------------------------- set-up
    def _create_estimator(self, values):
        from midas_ros.inference import DepthEstimator
        if not values['model.pretrained']:
            self.get_logger().warning(
                'model.pretrained is false: RANDOM network weights, the depth is meaningless '
                '(for tests and demos only)')
        return DepthEstimator(
            values['model.name'], device=values['device'], pretrained=values['model.pretrained'],
            parallel_frames=values['inference.parallel_frames'],
            weights=values['model.weights'] or None,
            weights_dir=values['model.weights_dir'] or None,
            allow_download=values['model.allow_download'],
            precision=values['inference.precision'],
            channels_last=values['inference.channels_last'],
            compile=values['inference.compile'], cpu_threads=values['inference.cpu_threads'],
            interop_threads=values['inference.interop_threads'],
            opencv_threads=values['inference.opencv_threads'],
            backend=values['model.backend'], backend_fallback=values['model.backend_fallback'],
            calibration=values['inference.calibration'],
            calibration_frames=values['inference.calibration_frames'],
            int8_max_error=values['inference.int8_max_error'], logger=self.get_logger(),
            input_size=values['model.input_size'], max_depth=values['model.max_depth'])

    def _apply_parameters(self, candidate):
        """Check what the candidate values need for every camera they change; swap it in only
        if all of it works (a bad value for one camera changes nothing anywhere)."""
        inherited = self._inherited_after(candidate)
        plans = []
        try:
            for camera in self.cameras:
                values = camera_values(candidate, camera.name, inherited[camera.name])
                if values != camera.values:
                    plans.append((camera, camera.check(values)))
        except ValueError as error:
            return str(error)
        for camera, plan in plans:
            camera.apply(plan)
            self.scheduler.set_max_rate(camera.name, camera.values['max_rate'])
        self.values, self._inherited = candidate, inherited
        return None

    def _inherited_after(self, candidate):
        """``_inherited`` once ``candidate`` applies: a camera parameter set (other than by
        ``_propagate_node_values``) is the camera's own from then on."""
        inherited = {name: set(names) for name, names in self._inherited.items()}
        if not self._propagating:
            for name, names in inherited.items():
                names -= {p for p in names
                          if candidate[f'{name}.{p}'] != self.values[f'{name}.{p}']}
        return inherited

    def _propagate_node_values(self, parameters):
        """After the node's own value of a per-stream parameter changed, show it in the
        ``<camera>.<name>`` parameters of the cameras that follow it (they already use it)."""
        if self._propagating:
            return
        follow = [Parameter(f'{name}.{parameter.name}', value=parameter.value)
                  for parameter in parameters for name, names in self._inherited.items()
                  if parameter.name in names]
        if follow:
            self._propagating = True
            try:
                self.set_parameters(follow)
            finally:
                self._propagating = False

    def _runtime(self):
        """(why this backend, the thread plan and why that many frames in parallel) of the
        estimator, '' for what it lacks."""
        estimator = self.network.estimator
        choice = getattr(estimator, 'backend_choice', None)
        plan = getattr(estimator, 'thread_plan', None)
        frames = getattr(estimator, 'parallel_frames_reason', '')
        return (choice.reason if choice else '',
                (plan.describe() + (f' ({frames})' if frames else '')) if plan else '')

    # ---------------------------------------------------------------- work
    def run(self):
        """Process frames until shutdown. Call from the process's main thread (see ``main``):
        the network of lane 0 runs here (the other lanes' in their threads, see
        ``activate``), each frame's outputs in the ``outputs`` worker, overlapping the next
        frames' networks (``midas_ros.handoff``)."""
        try:
            self._work_loop(0, self._work_lock)
        finally:
            self._stop_lanes()
            self._outputs_stage.close()

    def _stop_lanes(self):
        """End the other lanes' threads, each after the frame it works on."""
        self._lanes_stop.set()
        for thread in self._lane_threads:
            thread.join()
        self._lane_threads = []

    def _work_loop(self, lane, lock):
        """Take the next cameras' newest frames and run them through ``lane``'s network, until
        shutdown (or, for lanes other than 0, deactivation). ``lock`` is held over each take:
        lane 0's is the one deactivate takes; the other lanes' threads are joined instead."""
        while rclpy.ok(context=self.context) and not (
                lane and (self._lanes_stop.is_set() or lane >= self.network.lanes)):
            network = self.network
            batch = network.max_batch if network is not None and network.batching else 1
            taken = self.scheduler.take(TAKE_TIMEOUT_S, batch)
            if not taken:
                continue
            with lock:
                if self.active:     # not deactivated while the frames waited
                    self._process(taken, lane)

    def _guarded(self, camera, work, *args):
        """``work(*args)``; a failure costs that camera's frame only (counted, logged,
        rate-limited, naming the camera). Returns what ``work`` returned, None on failure."""
        try:
            return work(*args)
        except (ConversionError, ValueError) as error:
            camera.failed(error)
        except Exception as error:  # keep the node alive whatever one frame does
            if rclpy.ok(context=self.context):  # else it raced with the shutdown (Ctrl-C)
                camera.failed(error, unexpected=True)
        return None

    def _process(self, taken, lane):
        """Intake each taken frame in its camera, run the network on them (frames of one size
        as one batch where the network batches), hand each to the outputs stage."""
        groups = {}
        for waiting in taken:
            camera = self._camera_named[waiting.camera]
            frame = self._guarded(camera, camera.intake, waiting)
            if frame is not None:
                self.scheduler.set_group(camera.name, frame.size)
                groups.setdefault((frame.size, frame.order), []).append(frame)
        for (size, order), frames in groups.items():
            if size not in self.network.estimators[lane].warmed_up:
                self._warm_up(*size, order, lane)
            frames = [frame for frame in frames if frame.wanted]
            if not frames:
                continue    # no one listens: like depth_image_proc, no work at all
            try:
                inferences = self.network.infer_batch([frame.pixels for frame in frames],
                                                      order, lane)
            except Exception as error:  # the network failed these frames: each camera's loss
                if rclpy.ok(context=self.context):
                    expected = isinstance(error, (ConversionError, ValueError))
                    for frame in frames:
                        frame.camera.failed(error, unexpected=not expected)
                continue
            for frame, inference in zip(frames, inferences):
                frame.inference = inference
                self._outputs_stage.submit(self._finish, frame)

    def _warm_up(self, width, height, order, lane):
        """Build / compile / autotune for ``width`` x ``height`` once, before its first frame.

        Exported backends build (or load) their graph here, ``torch.compile`` compiles and
        cuDNN autotunes: seconds to minutes (a TensorRT engine build on a Jetson) that must not
        be paid inside the frame loop unannounced. /diagnostics says 'warming up' meanwhile.
        Each lane warms up its own estimator, one lane at a time: exports and engine builds
        are not done twice at once.
        """
        estimator = self.network.estimators[lane]
        with self._warmup_lock:
            self.get_logger().info(f'warming up for {width}x{height} images '
                                   f'({estimator.backend}, {estimator.precision} on '
                                   f'{estimator.device}'
                                   + (f', lane {lane})' if self.network.lanes > 1 else ')'))
            self.warming_up = (width, height)
            try:
                seconds = estimator.warmup(width, height, order)
            finally:
                self.warming_up = None
        self.get_logger().info(f'ready for {width}x{height} images: warm-up took {seconds:.2f} s'
                               f' ({estimator.backend}, {estimator.precision})')

    def _finish(self, frame):
        """Second stage (``outputs`` worker): the frame's camera makes and publishes its
        outputs. Frames of a camera finish in arrival order: one whose network finished after
        a newer frame's (another lane) is dropped (counted), never published out of order."""
        camera = frame.camera
        with self._finish_lock:
            if frame.number < camera.newest_finished:
                camera.superseded += 1
                return
            camera.newest_finished = frame.number
            if self.active:     # deactivate waits for this; after it, nothing is published
                self._guarded(camera, camera.publish, frame)

    def _forget_the_past(self, why):
        """ROS time went back (a bag loop, a simulator reset): every camera's scale filter,
        rate and latency windows and anchors belong to the old time line, and so do the
        buffered transforms."""
        for camera in self.cameras:
            camera.forget_the_past()
        self.tf.clear()
        self.get_logger().info(f'{why}: cleared the scale smoothing, frame rate, latency, '
                               'anchors and transforms (a bag loop or simulator reset?)')

    # ---------------------------------------------------------------- diagnostics
    def network_status(self):
        """(level or None, message, values) of the network every camera shares: level set
        when it decides the cameras' status (backend failed, warming up); a message alone
        when it is a warning the camera's own state may override (a backend fallback, int8
        refused)."""
        estimator = self.network.estimator
        reason, threads = self._runtime()
        values = {
            'backend': estimator.backend,
            'backend reason': reason,
            'threads': threads,
            'backend requested': estimator.requested_backend,
            # Any lane's: a replica's own session may fail where lane 0's did not.
            'backend error': next((e.backend_error for e in self.network.estimators
                                   if e.backend_error), ''),
            'device': str(estimator.device),
            'weights': 'pretrained' if self.values['model.pretrained'] else 'random',
            'precision': f'{estimator.precision} ({estimator.precision_reason})',
            'warm-up (s)': ', '.join(f'{w}x{h}: {seconds:.2f}' for (w, h), seconds
                                     in list(estimator.warmed_up.items())),
            'cameras sharing the network': len(self.cameras),
        }
        # inference.precision int8: one calibration and one decision for every camera and lane.
        int8 = getattr(estimator, 'int8', None)
        if int8 is not None:
            values.update(int8.diagnostics())
        refused = 'int8 refused, running fp32' if int8 is not None and int8.state == 'fp32' else ''
        if estimator.backend_error and estimator.backend == estimator.requested_backend:
            return (DiagnosticStatus.ERROR,
                    f'backend {estimator.backend} failed: {estimator.backend_error}', values)
        if self.warming_up is not None:
            return (DiagnosticStatus.WARN, 'warming up for {}x{} images'.format(*self.warming_up),
                    values)
        if estimator.backend_error:
            return (None, f'backend {estimator.requested_backend} failed, running '
                          f'{estimator.backend}: {estimator.backend_error}'
                          + (f'; {refused}' if refused else ''), values)
        return None, refused, values

    def _publish_diagnostics(self):
        shared = self.network_status()
        array = DiagnosticArray(status=[
            camera.status(shared, self.scheduler.counts(camera.name))
            for camera in self.cameras])
        array.header.stamp = self.get_clock().now().to_msg()
        self.pub_diagnostics.publish(array)


def main(args=None):
    """Frames are processed in the main thread and ROS callbacks run in a background one:
    torch's CPU thread pool is fastest driven from the thread that created it (measured on 2
    cores: 46 ms per midas_v21_small_256 forward from the main thread, 72 ms from another)."""
    prefer_passive_waiting()   # before torch is imported: idle OpenMP threads must not spin
    # Any error building the node (a bad read-only parameter...) is one clear line.
    return run_node(DepthNode, 'depth_node', startup_errors=(Exception,), args=args,
                    main_thread_work=DepthNode.run)


if __name__ == '__main__':
    raise SystemExit(main())
