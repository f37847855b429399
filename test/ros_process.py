"""Helpers for tests that run a midas_ros node as its own process and talk to it over real DDS.

The environment (loopback-only discovery, this run's domain, the shared-memory profile) comes
from test/conftest.py through os.environ.
"""
import os
import subprocess
import sys
import time
import uuid

import rclpy
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParametersAtomically
from rclpy.executors import SingleThreadedExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def unique_namespace(prefix='t'):
    """A namespace no other test of this run uses."""
    return f'/{prefix}{uuid.uuid4().hex[:8]}'


class NodeProcess:
    """``python -m midas_ros <executable> --ros-args ...`` as a child process.

    Its output goes to a file so a chatty node can never block on a full pipe; ``output()``
    reads it back for assertions on log messages.
    """

    def __init__(self, executable, ros_args=(), tmp_path=None, args=()):
        log_dir = tmp_path or '/tmp'
        self.log_path = os.path.join(str(log_dir), f'{executable}-{uuid.uuid4().hex[:6]}.log')
        self._log = open(self.log_path, 'wb')
        command = [sys.executable, '-m', 'midas_ros', executable, *args]
        if ros_args:
            command += ['--ros-args', *ros_args]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                        cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED='1'))

    def output(self):
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path, 'r', errors='replace') as log:
            return log.read()

    def alive(self):
        return self.process.poll() is None

    def stop(self, timeout=10.0):
        """SIGINT (like Ctrl-C), then kill; returns the exit code."""
        if self.alive():
            self.process.send_signal(2)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def _parameter_value(value):
    """rcl_interfaces ParameterValue of a Python bool, str, int or float."""
    if isinstance(value, bool):
        return ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
    if isinstance(value, str):
        return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
    if isinstance(value, int):
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
    return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=float(value))


class RosTestNode:
    """An in-process rclpy node with helpers to wait for messages."""

    def __init__(self, name='test_probe'):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(f'{name}_{uuid.uuid4().hex[:6]}', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received = {}

    def collect(self, msg_type, topic, qos=10):
        """Subscribe and keep every message of ``topic`` in ``self.received[topic]``."""
        self.received[topic] = []
        self.node.create_subscription(msg_type, topic, self.received[topic].append, qos)
        return self.received[topic]

    def spin_until(self, condition, timeout, step=None):
        """Spin until ``condition()`` is true (returns True) or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if step is not None:
                step()
            self.executor.spin_once(timeout_sec=0.05)
            if condition():
                return True
        return False

    def set_parameters_atomically(self, node_path, values, timeout=10.0):
        """Set ``values`` ({name: bool, str, int or float}) on the node ``node_path`` in one
        atomic request (all or nothing, as `ros2 param load` does); the SetParametersResult."""
        client = self.node.create_client(SetParametersAtomically,
                                         f'{node_path}/set_parameters_atomically')
        assert client.wait_for_service(timeout_sec=30), f'no parameter service on {node_path}'
        parameters = [ParameterMsg(name=name, value=_parameter_value(value))
                      for name, value in values.items()]
        future = client.call_async(SetParametersAtomically.Request(parameters=parameters))
        self.spin_until(future.done, timeout)
        return future.result().result

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
