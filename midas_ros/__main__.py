"""``python -m midas_ros <executable> [args...]``: setup.py's executables, without ament.

Robots run ``ros2 run midas_ros <executable>``; where ROS 2 comes from PyPI wheels (no ``ros2``
CLI, no ``ros2 launch``) the same executables (:mod:`midas_ros.executables`) run through this
dispatcher.
"""
import sys

from midas_ros.executables import EXECUTABLES, run


def _usage():
    names = '\n  '.join(name for name, _ in EXECUTABLES)
    return f'usage: python -m midas_ros <executable> [args...]\n\nexecutables:\n  {names}\n'


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ('-h', '--help'):
        sys.stdout.write(_usage())
        return 0
    if argv[0] not in dict(EXECUTABLES):
        sys.stderr.write(f"midas_ros: unknown executable '{argv[0]}'\n\n" + _usage())
        return 2
    return run(argv[0], argv[1:])


if __name__ == '__main__':
    sys.exit(main())
