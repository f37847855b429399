"""The ``main`` every midas_ros node shares: init, build, (auto)start, spin until stopped, clean
up.

Stopping is quiet and always status 0: Ctrl-C in a terminal running ``ros2 launch`` sends SIGINT
to the whole process group and launch forwards another one, so a node gets two within
milliseconds (then SIGTERM if it is slow). rclpy's own signal handler shuts the context down on
the first; the Python-level handlers installed here only make sure that no signal ever raises
KeyboardInterrupt (which, arriving a second time during clean-up or in an atexit handler, used to
print a traceback).
"""
import ctypes
import logging
import os
import signal
import sys
import threading
import time

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation

from midas_ros.ros.lifecycle import ManagedNode, StartupError
from midas_ros.ros.parameters import BadParameter

RCLError = rclpy_implementation.RCLError     # rcl failed (e.g. a parameter file it cannot parse)


def _stop_requested(signum, frame):
    """Python-level SIGINT/SIGTERM handler: nothing to do (rclpy's handler, which runs first,
    has shut the context down), and nothing raised however many signals arrive."""


# Set by our launch files (midas_ros/ros/launch_support.py) for the nodes they start.
END_WITH_PARENT = 'MIDAS_ROS_END_WITH_PARENT'
_PR_SET_PDEATHSIG = 1


def end_with_the_parent():
    """Under ``ros2 launch`` of our launch files (``$MIDAS_ROS_END_WITH_PARENT``), on Linux:
    SIGTERM this process when its parent (launch) ends. SIGTERM sent to ``ros2 launch`` alone
    (``kill PID``, a service manager stopping only the main process) makes launch cancel its
    run and exit without stopping its processes ('using SIGTERM can result in orphaned
    processes'); with this every node still ends, cleanly, within its shutdown time."""
    if os.environ.get(END_WITH_PARENT) != '1' or not sys.platform.startswith('linux'):
        return
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0,
                                                0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:     # the parent ended before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def install_quiet_signal_handlers():
    """Make SIGINT and SIGTERM end the process through rclpy's shutdown, never by an exception
    (and, under our launch files, end it with launch: :func:`end_with_the_parent`).

    Call before ``rclpy.init``: rclpy's handler calls the Python handler found at init after
    its own work. Only from the main thread (Python's rule for signal handlers)."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _stop_requested)
        end_with_the_parent()


def ignore_further_signals():
    """The process is ending: later SIGINT/SIGTERM are ignored. Python's finalization puts
    default handlers back (a second Ctrl-C there would kill the process with status -2), but
    leaves an ignored signal ignored."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)


def run_node(create_node, name, startup_errors=(), args=None, main_thread_work=None):
    """Run the node ``create_node()`` builds, then end the process with its exit status
    (:func:`exit_without_finalizing`: never returns).

    A :class:`ManagedNode` is brought to active when its ``autostart`` parameter is true; a
    failure there, or an error of the types in ``startup_errors`` raised while the node is built
    (missing weights, a file that cannot be written...), ends the process with one log line and
    status 1, not a traceback. SIGINT, SIGTERM, an external shutdown and a lifecycle shutdown
    are a normal end (status 0).

    ``main_thread_work(node)``, if given, runs in the main thread until the context shuts down
    while ROS callbacks run in a background thread (depth_node's inference: see there why).
    """
    exit_without_finalizing(_run(create_node, name, startup_errors, args, main_thread_work))


def exit_without_finalizing(status):
    """End the process with ``status`` once everything of ours is closed (node destroyed,
    rclpy shut down, its logging finalized): output flushed, Python's interpreter finalization
    skipped. Tearing down torch's, OpenVINO's and the other modules' objects one by one took
    5-7 s on a loaded 2-core machine after a clean stop (SIGINT), longer than ``ros2 launch``
    waits before escalating to SIGTERM, with nothing left to save."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    logging.shutdown()
    os._exit(status)


def init_ros(args, name):
    """``rclpy.init(args=args)``; True when it worked. A command line or parameter file rcl
    cannot parse (a YAML syntax error) is one FATAL line naming it, not a traceback: False."""
    try:
        rclpy.init(args=args)
    except RCLError as error:
        rclpy.logging.get_logger(name).fatal(f'cannot start: {error}')
        return False
    return True


def _run(create_node, name, startup_errors, args, main_thread_work):
    install_quiet_signal_handlers()
    if not init_ros(args, name):
        return 1
    node = executor = None
    starting = threading.Event()
    starting.set()
    threading.Thread(target=_end_if_stopped_while_starting, name='stop_while_starting',
                     args=(rclpy.get_default_context(), name, starting), daemon=True).start()
    try:
        try:
            node = create_node()
            if isinstance(node, ManagedNode):
                node.start()
        except (StartupError, BadParameter, *startup_errors) as error:
            starting.clear()
            if not rclpy.ok():
                return 0        # stopped (Ctrl-C) while starting: not a failure
            rclpy.logging.get_logger(name).fatal(f'cannot start: {error}')
            return 1
        finally:
            starting.clear()
        executor = SingleThreadedExecutor(context=node.context)
        executor.add_node(node)
        if main_thread_work is None:
            executor.spin()
        else:
            _spin_in_background(executor, node)
            main_thread_work(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if node is None or node.context.ok():
            raise
        # A callback that raced with the shutdown (publishing on the closed context): done.
    finally:
        if isinstance(node, ManagedNode):
            node.release()
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        ignore_further_signals()
    return 0


def _end_if_stopped_while_starting(context, name, starting):
    """While the node is being built and configured (``starting`` set): a stop (SIGINT or
    SIGTERM shut ``context`` down) ends the process at once, status 0. Building a network can
    take tens of seconds on a loaded CPU (minutes for a TensorRT engine) in calls that do not
    return to Python; nothing is running or recorded yet that a slower exit would save."""
    while starting.is_set():
        if not context.ok():
            if starting.is_set():
                rclpy.logging.get_logger(name).info('stopped while starting')
                exit_without_finalizing(0)
            return
        time.sleep(0.05)


def _spin_in_background(executor, node):
    def spin():
        try:
            executor.spin()
        except ExternalShutdownException:
            pass
        except Exception as error:  # a dead callback thread must not leave a silent node
            if not node.context.ok():
                return      # a callback raced with the shutdown
            node.get_logger().fatal(f'ROS callbacks stopped: {type(error).__name__}: {error}')
            rclpy.try_shutdown(context=node.context)
    threading.Thread(target=spin, name='ros_callbacks', daemon=True).start()
