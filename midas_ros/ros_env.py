"""Where the package's data files are, and the DDS environment its processes run with.

ROS-free on purpose: the dispatcher, the pipeline runner and the tests set these variables
*before* rclpy is imported, because Fast DDS reads them when a participant is created.
"""
import os
import random
from pathlib import Path

LOCALHOST_PROFILE = 'fastdds_localhost.xml'


def share_dir():
    """The package's share folder (``config/``, ``launch/``).

    Installed by colcon it is found through the ament index; run from a source checkout (the
    PyPI-wheel venv) it is the repository root next to this package.
    """
    try:
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory('midas_ros'))
    except Exception:  # not installed through ament: the source tree is the share folder
        return Path(__file__).resolve().parent.parent


def config_path(name):
    """Absolute path of a file in the package's ``config/`` folder."""
    return share_dir() / 'config' / name


def apply_localhost_transport_profile(environ=os.environ):
    """Use the shipped shared-memory Fast DDS profile when discovery is limited to this host.

    With stock transports, 640x480 images and clouds fragment over UDP and best-effort (sensor
    data) subscribers lose most of them; the profile moves them to shared memory. It only makes
    sense on one machine, so it is applied only under ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``
    and never over a profile the user chose. Returns the profile path in effect, or None.
    """
    if environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE', '').upper() != 'LOCALHOST':
        return environ.get('FASTDDS_DEFAULT_PROFILES_FILE')
    if not environ.get('FASTDDS_DEFAULT_PROFILES_FILE'):
        profile = config_path(LOCALHOST_PROFILE)
        if profile.is_file():
            environ['FASTDDS_DEFAULT_PROFILES_FILE'] = str(profile)
    return environ.get('FASTDDS_DEFAULT_PROFILES_FILE')


def isolated_ros_environment(domain_id=None, base=None):
    """Environment for a ROS process that must not talk beyond this machine or to other runs.

    Loopback-only discovery, a domain of its own (random unless given) and the shared-memory
    transport profile.
    """
    env = dict(os.environ if base is None else base)
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    env['ROS_DOMAIN_ID'] = str(random.randint(1, 100) if domain_id is None else domain_id)
    env.pop('ROS_STATIC_PEERS', None)
    apply_localhost_transport_profile(env)
    return env
