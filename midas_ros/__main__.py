"""``python -m midas_ros <executable> [args...]``: setup.py's executables, without ament.

Robots run ``ros2 run midas_ros <executable>``; where ROS 2 comes from PyPI wheels (no ``ros2``
CLI, no ``ros2 launch``) the same entry points run through this dispatcher.
"""
import importlib
import os
import sys

# name -> 'module:function'; keep in step with setup.py's console_scripts (a test checks it).
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


def _usage():
    names = '\n  '.join(name for name, _ in EXECUTABLES)
    return f'usage: python -m midas_ros <executable> [args...]\n\nexecutables:\n  {names}\n'


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ('-h', '--help'):
        sys.stdout.write(_usage())
        return 0
    table = dict(EXECUTABLES)
    name = argv[0]
    if name not in table:
        sys.stderr.write(f"midas_ros: unknown executable '{name}'\n\n" + _usage())
        return 2
    module_name, function_name = table[name].split(':')
    # Large images and clouds need the shared-memory transport profile on one machine; apply it
    # before rclpy is imported (Fast DDS reads the variable when the participant is created).
    from midas_ros.ros_env import apply_localhost_transport_profile
    apply_localhost_transport_profile(os.environ)
    # Executables read sys.argv (rclpy's --ros-args included) like ros2 run would hand them.
    sys.argv = [f'midas_ros {name}'] + argv[1:]
    function = getattr(importlib.import_module(module_name), function_name)
    result = function()
    return result if isinstance(result, int) else 0


if __name__ == '__main__':
    sys.exit(main())
