"""Managed nodes and clean stops, without the ROS 2 CLI (test_robot_path.py drives the same
through ``ros2 lifecycle`` and ``ros2 launch``).

In process: obstacle_node walks every lifecycle transition and its graph entities follow (no
publishers before configure, no subscriptions while inactive, nothing after cleanup). As
processes: SIGINT twice within 100 ms to the whole process group (a terminal's Ctrl-C plus
launch's own) and SIGTERM end depth_node and obstacle_node with status 0 and no traceback.
"""
import os
import signal
import subprocess
import sys
import time

import pytest
import rclpy
from lifecycle_msgs.msg import State
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.timer import Timer

from midas_ros.ros.obstacle_node import ObstacleNode
from ros_process import REPO, unique_namespace

SUCCESS = TransitionCallbackReturn.SUCCESS


@pytest.fixture
def managed_obstacle_node():
    context = rclpy.Context()
    namespace = unique_namespace('life')
    rclpy.init(context=context, args=['--ros-args', '-p', 'autostart:=false',
                                      '-r', f'__ns:={namespace}'])
    node = ObstacleNode(context=context)
    node.start()
    yield node
    node.destroy_node()
    rclpy.shutdown(context=context)


def _state(node):
    return node._state_machine.current_state[0]


def _own_topics(node):
    """(published topics, subscribed topics) of this node, as the ROS graph sees them."""
    name, namespace = node.get_name(), node.get_namespace()
    published = {t for t, _ in node.get_publisher_names_and_types_by_node(name, namespace)}
    subscribed = {t for t, _ in node.get_subscriber_names_and_types_by_node(name, namespace)}
    # The node's topics, not its lifecycle transition_event (under namespace/name/).
    own, private = namespace + '/', f'{namespace}/{name}/'
    return tuple({t for t in topics if t.startswith(own) and not t.startswith(private)}
                 for topics in (published, subscribed))


def test_autostart_false_waits_unconfigured_then_every_transition_works(managed_obstacle_node):
    node = managed_obstacle_node
    ns = node.get_namespace()
    outputs = {f'{ns}/obstacles', f'{ns}/obstacles/markers', f'{ns}/obstacles/nearest'}
    assert _state(node) == State.PRIMARY_STATE_UNCONFIGURED
    assert _own_topics(node) == (set(), set())
    # Parameters work before configure (a lifecycle manager may set them first).
    assert node.get_parameter('min_score').value == 0.0

    assert node.trigger_configure() == SUCCESS
    assert _state(node) == State.PRIMARY_STATE_INACTIVE
    assert _own_topics(node) == (outputs, set())
    assert not node.streams[0].publishers['obstacles'].is_activated

    assert node.trigger_activate() == SUCCESS
    assert _state(node) == State.PRIMARY_STATE_ACTIVE
    # 'auto' QoS subscribes once a publisher shows up: subscriptions are pending, not absent.
    assert len([e for e in node._inputs if not isinstance(e, Timer)]) == 3
    assert node.streams[0].publishers['obstacles'].is_activated

    assert node.trigger_deactivate() == SUCCESS
    assert _state(node) == State.PRIMARY_STATE_INACTIVE
    assert _own_topics(node) == (outputs, set()) and node._inputs == []
    assert not node.streams[0].publishers['obstacles'].is_activated

    assert node.trigger_activate() == SUCCESS       # and back again
    assert node.trigger_deactivate() == SUCCESS
    assert node.trigger_cleanup() == SUCCESS
    assert _state(node) == State.PRIMARY_STATE_UNCONFIGURED
    assert _own_topics(node) == (set(), set())

    assert node.trigger_configure() == SUCCESS
    assert node.trigger_shutdown() == SUCCESS
    assert _state(node) == State.PRIMARY_STATE_FINALIZED
    assert _own_topics(node) == (set(), set())


def _start(executable, *ros_args):
    """``python -m midas_ros executable`` as the leader of its own process group."""
    return subprocess.Popen(
        [sys.executable, '-m', 'midas_ros', executable, '--ros-args', *ros_args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
        env=dict(os.environ, PYTHONUNBUFFERED='1'))


def _wait_for_line(process, text, timeout):
    """Read the process's output until it holds ``text``; the output read so far."""
    deadline = time.monotonic() + timeout
    os.set_blocking(process.stdout.fileno(), False)
    buffer = b''
    while time.monotonic() < deadline and process.poll() is None:
        chunk = process.stdout.read()
        if chunk:
            buffer += chunk
            if text.encode() in buffer:
                break
        else:
            time.sleep(0.05)
    os.set_blocking(process.stdout.fileno(), True)
    return buffer.decode(errors='replace')


def _stop(process, signals, gap_s):
    """Send ``signals`` to the whole process group ``gap_s`` apart; (status, rest of output)."""
    for index, signum in enumerate(signals):
        if index:
            time.sleep(gap_s)
        os.killpg(process.pid, signum)
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f'did not stop within 30 s:\n{output.decode(errors="replace")}')
    return process.returncode, output.decode(errors='replace')


@pytest.mark.parametrize('executable, ros_args, ready, signals', [
    ('depth_node', ['-p', 'model.pretrained:=false', '-p', 'device:=cpu'],
     'depth_node active', (signal.SIGINT, signal.SIGINT)),
    ('obstacle_node', [], 'activated', (signal.SIGINT, signal.SIGINT)),
    ('obstacle_node', [], 'activated', (signal.SIGTERM,)),
])
def test_ctrl_c_and_sigterm_end_with_status_0_and_no_traceback(
        executable, ros_args, ready, signals):
    namespace = unique_namespace('stop')
    process = _start(executable, '-r', f'__ns:={namespace}', *ros_args)
    before = _wait_for_line(process, ready, timeout=120)
    assert ready in before, f'{executable} did not come up:\n{before}'
    status, after = _stop(process, signals, gap_s=0.03)
    output = before + after
    assert status == 0, output
    assert 'Traceback' not in output and 'KeyboardInterrupt' not in output, output


def test_recorder_without_mcap_says_so_in_one_line(tmp_path):
    """mcap has no rosdep key, so package.xml leaves it out: only recording needs it, and the
    recorder says what is missing (exit 1, no traceback) where it is not installed."""
    hide_mcap = ("import sys; sys.modules['mcap'] = None; sys.modules['mcap.writer'] = None; "
                 "from midas_ros.ros.recorder import main; sys.exit(main())")
    result = subprocess.run(
        [sys.executable, '-c', hide_mcap, '--ros-args', '-r', f'__ns:={unique_namespace()}',
         '-p', f"output:={tmp_path / 'out.mcap'}"], capture_output=True, text=True,
        timeout=120, cwd=REPO)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    lines = [line for line in output.splitlines() if 'mcap' in line]
    assert len(lines) == 1 and "Python package 'mcap'" in lines[0], output
    assert 'Traceback' not in output and not (tmp_path / 'out.mcap').exists()
