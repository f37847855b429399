"""What midas_ros's launch files share: a launch that fails loudly and stops cleanly.

* :func:`end_launch_when_a_node_fails`: a node that exits on its own with a non-zero status
  (no weights, a bad parameter file, a crash) ends the whole launch, with one line saying
  which node and why, instead of leaving the others running (and warning) without it.
* :func:`no_keyboard_interrupt`: Ctrl-C reaches launch only through its own signal handling.
* :data:`NODE_ENV`: the nodes end when ``ros2 launch`` does, also when launch itself is ended
  by SIGTERM (which makes it cancel its run without stopping its processes).

``launch`` is imported inside the functions: the package's modules import without the ROS 2
launch tools (test/test_imports.py runs where they are not installed).
"""
import re
import signal
import threading

import yaml

# What a node's last error line looks like in rclpy's console format, '[FATAL] [1733.2]
# [depth_node]: cannot start: ...'; the text after the first ']: ' is the reason.
_ERROR_LEVELS = ('[FATAL]', '[ERROR]')
# For every node of our launch files (``Node(additional_env=NODE_ENV)``): see
# midas_ros.ros.node_main.end_with_the_parent (the variable's name is defined there).
NODE_ENV = {'MIDAS_ROS_END_WITH_PARENT': '1'}


# depth_node's network, settable from both launch files: (argument, parameter, description).
# Empty (the default): the parameter file's value (config/depth_node.yaml: midas_v21_small_256,
# auto, true), so that a params file's own choice is not overridden by a launch default.
NETWORK_ARGUMENTS = (
    ('model', 'model.name', 'MiDaS variant (model.name), e.g. dpt_swin2_tiny_256'),
    ('device', 'device', 'auto | cpu | cuda | cuda:N'),
    ('pretrained', 'model.pretrained', 'false: random weights (no checkpoint needed; the depth '
     'is meaningless)'),
    ('weights', 'model.weights', 'checkpoint file of model (model.weights), e.g. one written by '
     'python -m midas_ros finetune'),
)


def network_arguments():
    """DeclareLaunchArgument actions for NETWORK_ARGUMENTS."""
    from launch.actions import DeclareLaunchArgument
    return [DeclareLaunchArgument(argument, default_value='', description=f'{description} '
                                  "(default: the parameter file's value)")
            for argument, _, description in NETWORK_ARGUMENTS]


def network_overrides(context):
    """``{parameter: value}`` of the NETWORK_ARGUMENTS given on the command line (typed as YAML
    reads them: ``pretrained:=false`` is a bool), for depth_node's ``parameters`` after its
    parameter file. Call in an OpaqueFunction (it needs the launch context)."""
    from launch.substitutions import LaunchConfiguration
    overrides = {}
    for argument, parameter, _ in NETWORK_ARGUMENTS:
        text = LaunchConfiguration(argument).perform(context)
        if text:
            overrides[parameter] = yaml.safe_load(text) if parameter == 'model.pretrained' \
                else text
    return overrides


def camera_names(text):
    """The ``cameras`` launch argument ('front,rear' or '[front, rear]') as a list of names."""
    return [name for name in re.split(r'[\s,\[\]]+', text) if name]


def camera_overrides(context):
    """``{'cameras': [names]}`` when the ``cameras`` launch argument names some, for depth_node's
    and obstacle_node's ``parameters`` after their files; ``{}`` otherwise, so the file's
    ``cameras`` stands (an empty list cannot be passed as a launch parameter). Call in an
    OpaqueFunction (it needs the launch context)."""
    from launch.substitutions import LaunchConfiguration
    names = camera_names(LaunchConfiguration('cameras').perform(context))
    return {'cameras': names} if names else {}


def _reason_from(line):
    """The message of a log line; a message going on over more lines (a list after 'Looked
    in:') is cut at its last full sentence, the rest being right above in the output."""
    reason = line.split(']: ', 1)[-1].strip()
    if reason.endswith(':'):
        head = reason.rsplit('. ', 1)[0] if '. ' in reason else reason.rstrip(':')
        reason = f'{head.rstrip(".")}. (details above)'
    return reason


def exit_description(returncode):
    """'exited with status 1' / 'was killed by SIGKILL' for a process's return code."""
    if returncode is not None and returncode < 0:
        try:
            return f'was killed by {signal.Signals(-returncode).name}'
        except ValueError:
            pass
    return f'exited with status {returncode}'


def end_launch_when_a_node_fails(nodes):
    """Event handlers (a list of launch actions) for ``nodes`` (launch_ros Node actions): when
    one of them ends with a non-zero status while the launch is running, log one line,

        [ERROR] [midas_ros]: /depth_node exited with status 1: cannot start: no weights ...;
        stopping the launch

    (its last FATAL/ERROR line is the reason) and shut the launch down, so every other node
    stops too. Nodes ending with status 0 (a finite video played out) and exits during a
    shutdown (Ctrl-C) change nothing."""
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.event_handlers import OnProcessExit, OnProcessIO
    from launch.events import Shutdown
    from launch.logging import get_logger

    last_error = {}

    def remember_errors(event):
        for line in event.text.decode(errors='replace').splitlines():
            if line.lstrip().startswith(_ERROR_LEVELS):
                last_error[id(event.action)] = _reason_from(line)

    def on_exit(event, context):
        if event.returncode == 0 or context.is_shutdown:
            return None
        name = getattr(event.action, 'node_name', None) or event.action.name
        why = last_error.get(id(event.action), 'see its output above')
        reason = f'{name} {exit_description(event.returncode)}: {why}'
        get_logger('midas_ros').error(f'{reason}; stopping the launch')
        return [EmitEvent(event=Shutdown(reason=reason))]

    handlers = []
    for node in nodes:
        handlers.append(RegisterEventHandler(OnProcessIO(target_action=node,
                                                         on_stderr=remember_errors,
                                                         on_stdout=remember_errors)))
        handlers.append(RegisterEventHandler(OnProcessExit(target_action=node,
                                                           on_exit=on_exit)))
    return handlers


def _stop_requested(signum, frame):
    """Python-level SIGINT handler of the launch process: nothing to do (launch's own handler,
    woken through the signal wake-up fd, starts the shutdown), and nothing raised."""


def no_keyboard_interrupt():
    """Stop SIGINT from raising KeyboardInterrupt in the ``ros2 launch`` process.

    launch handles SIGINT itself (``AsyncSafeSignalManager``: the C-level handler writes the
    signal to a wake-up fd its event loop reads), but leaves Python's default handler in
    place, so each SIGINT also raises KeyboardInterrupt in whatever Python code runs at that
    moment. A Ctrl-C pressed twice (or SIGINT sent to the process group twice, as a terminal
    can) lands the second one inside launch's shutdown, while each ExecuteProcess's
    SIGTERM/SIGKILL escalation TimerAction evaluates its period (a PythonExpression): that
    task dies with 'Task exception was never retrieved ... KeyboardInterrupt', its completion
    future is never set, and launch waits for it forever after every node has exited. A
    Python handler that does nothing keeps launch's handling (the wake-up fd is written for
    any installed handler) and removes the exception. Main thread only (Python's rule), where
    launch loads launch files; elsewhere nothing changes."""
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        signal.signal(signal.SIGINT, _stop_requested)
