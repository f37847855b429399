"""Every executable of the package and the one way each is started.

``setup.py``'s console_scripts (``ros2 run midas_ros depth_node``, the scripts colcon installs)
and ``python -m midas_ros depth_node`` (no ament, PyPI wheels) both land in :func:`run`, so both
get the same environment and the same behaviour when stopped while still starting.

Only the standard library is imported here: this module is loaded before the executable's own
(torch, OpenVINO, rclpy), which can take seconds on a busy CPU.
"""
import importlib
import os
import signal
import sys

# name -> 'module:function'. setup.py names the entry point of the same name below for each
# (a test checks that the two agree).
EXECUTABLES = (
    ('depth_node', 'midas_ros.ros.depth_node:main'),
    ('obstacle_node', 'midas_ros.ros.obstacle_node:main'),
    ('depth_cloud_node', 'midas_ros.ros.depth_cloud_node:main'),
    ('camera_source', 'midas_ros.ros.camera_source:main'),
    ('synthetic_detector', 'midas_ros.ros.synthetic_detector:main'),
    ('recorder', 'midas_ros.ros.recorder:main'),
    ('pipeline', 'midas_ros.tools.pipeline:main'),
    ('demo', 'midas_ros.tools.demo:main'),
    ('infer', 'midas_ros.tools.infer:main'),
    ('benchmark', 'midas_ros.tools.benchmark:main'),
    ('calibrate_scale', 'midas_ros.tools.calibrate_scale:main'),
    ('evaluate_metric', 'midas_ros.tools.evaluate_metric:main'),
    ('finetune', 'midas_ros.tools.finetune:main'),
    ('evaluate', 'midas_ros.tools.evaluate:main'),
    ('export', 'midas_ros.tools.export:main'),
    ('gpu_check', 'midas_ros.tools.gpu_check:main'),
)

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _stopped_while_importing(signum, frame):
    """``ros2 launch`` stopping everything (Ctrl-C, another node's failure) while this process
    is still importing torch: nothing has started, so end now, quietly, with a node's normal
    stop status (0), instead of a KeyboardInterrupt traceback from inside an import."""
    os._exit(0)


def _import_main(target):
    """The function ``'module:function'`` names, imported with :func:`_stopped_while_importing`
    as the SIGINT/SIGTERM handler; the previous handlers are back when it returns (nodes then
    install their own at once: ``midas_ros.ros.node_main``)."""
    module_name, function_name = target.split(':')
    previous = {signum: signal.getsignal(signum) for signum in _STOP_SIGNALS}
    try:
        for signum in _STOP_SIGNALS:
            signal.signal(signum, _stopped_while_importing)
        return getattr(importlib.import_module(module_name), function_name)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run(name, args):
    """Run executable ``name`` with command-line ``args`` (rclpy's ``--ros-args`` included);
    its exit status. Raises KeyError for an unknown name."""
    target = dict(EXECUTABLES)[name]
    # Large images and clouds need the shared-memory transport profile on one machine; apply it
    # before rclpy is imported (Fast DDS reads the variable when the participant is created).
    from midas_ros.ros_env import apply_localhost_transport_profile
    apply_localhost_transport_profile(os.environ)
    # Executables read sys.argv like ``ros2 run`` hands it to them.
    sys.argv = [f'midas_ros {name}'] + list(args)
    result = _import_main(target)()
    return result if isinstance(result, int) else 0


def _entry_point(name):
    def entry_point():
        sys.exit(run(name, sys.argv[1:]))
    entry_point.__name__ = entry_point.__qualname__ = name
    entry_point.__doc__ = f'console_scripts entry point of ``{name}``: :func:`run`.'
    return entry_point


# One module-level function per executable, named like it (setup.py's console_scripts targets).
globals().update({name: _entry_point(name) for name, _ in EXECUTABLES})
