"""Test session set-up: every ROS participant of this run stays on loopback in a domain of its own.

Set before any test imports rclpy, so in-process nodes and the node processes the tests start
(which inherit os.environ) share one isolated domain and the shared-memory transport profile.
"""
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from midas_ros.ros_env import isolated_ros_environment  # noqa: E402

# dev.py test already chose a domain for this run; a bare `pytest` gets a random one.
_ENV = isolated_ros_environment(domain_id=os.environ.get('ROS_DOMAIN_ID'))
for key in ('ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_DOMAIN_ID', 'FASTDDS_DEFAULT_PROFILES_FILE'):
    if key in _ENV:
        os.environ[key] = _ENV[key]
os.environ.pop('ROS_STATIC_PEERS', None)
