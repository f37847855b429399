"""Whole numbers for floating-point parameters (public report a; rclcpp#979): ``2`` is 2.0 at
start-up (parameter files, ``-p``), in ``ros2 param set`` and in ``ros2 param load``, for every
node's table; a value that cannot be one stops the node with a line naming the parameter."""
import math

import pytest
import rclpy
from rclpy.parameter import Parameter

from midas_ros.ros.camera_source import CAMERA_SOURCE_PARAMS
from midas_ros.ros.depth_node_params import DEPTH_NODE_PARAMS
from midas_ros.ros.obstacle_node import OBSTACLE_NODE_PARAMS
from midas_ros.ros.parameters import BadParameter, declare_parameters
from midas_ros.ros.recorder import RECORDER_PARAMS
from midas_ros.ros.synthetic_detector import SYNTHETIC_DETECTOR_PARAMS
from ros_process import NodeProcess, RosTestNode, unique_namespace

TABLES = {'depth_node': DEPTH_NODE_PARAMS, 'obstacle_node': OBSTACLE_NODE_PARAMS,
          'camera_source': CAMERA_SOURCE_PARAMS, 'synthetic_detector': SYNTHETIC_DETECTOR_PARAMS,
          'recorder': RECORDER_PARAMS}


def whole_number_for(param):
    """A whole number ``param`` accepts, or None (no whole number lies within its limits)."""
    low = math.ceil(param.min) if param.min is not None else -10
    high = math.floor(param.max) if param.max is not None else 10
    value = min(max(int(round(param.default)) + 1, low), high)
    return value if low <= value <= high and param.check(value) is None else None


def float_rows(table):
    return [param for param in table
            if isinstance(param.default, float) and whole_number_for(param) is not None]


@pytest.fixture
def context():
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


def make_node(context, overrides):
    return rclpy.create_node('typed', context=context, parameter_overrides=[
        Parameter(name, value=value) for name, value in overrides.items()])


@pytest.mark.parametrize('node_name', TABLES)
def test_whole_numbers_are_floats_at_start_and_in_later_sets(context, node_name):
    table = TABLES[node_name]
    rows = float_rows(table)
    assert rows, f'{node_name} has no floating-point parameter to try'
    given = {param.name: whole_number_for(param) for param in rows}
    node = make_node(context, given)
    values = declare_parameters(node, table)
    for name, number in given.items():
        assert values[name] == float(number) and isinstance(values[name], float), name
        assert node.get_parameter(name).type_ == Parameter.Type.DOUBLE, name
    # ros2 param set (one by one) and ros2 param load (atomically), a whole number each.
    settable = [param for param in rows if not param.read_only]
    for param in settable:
        result, = node.set_parameters([Parameter(param.name, value=given[param.name])])
        assert result.successful, (param.name, result.reason)
        assert node.get_parameter(param.name).value == float(given[param.name])
    if settable:
        result = node.set_parameters_atomically(
            [Parameter(param.name, value=given[param.name]) for param in settable])
        assert result.successful, result.reason
    node.destroy_node()


@pytest.mark.parametrize('bad', ['two', True, [1.0, 2.0]])
def test_a_value_that_is_no_number_stops_the_start_naming_the_parameter(context, bad):
    param = float_rows(DEPTH_NODE_PARAMS)[0]
    node = make_node(context, {param.name: bad})
    with pytest.raises(BadParameter, match=param.name):
        declare_parameters(node, DEPTH_NODE_PARAMS)
    node.destroy_node()


def test_an_out_of_range_start_value_is_refused_not_replaced(context):
    node = make_node(context, {'sync_tolerance': -1.0})
    with pytest.raises(BadParameter, match='sync_tolerance'):
        declare_parameters(node, OBSTACLE_NODE_PARAMS)
    node.destroy_node()


def test_a_parameter_file_of_whole_numbers_over_dds(tmp_path):
    """The report's file, as obstacle_node and depth_node read it: the node runs with the numbers
    given; ros2 param load's atomic set of whole numbers succeeds; a word for a number ends the
    process with status 1 and one line naming the parameter."""
    params = tmp_path / 'params.yaml'
    params.write_text('/**:\n  ros__parameters:\n    sync_tolerance: 1\n    max_range: 50\n')
    namespace = unique_namespace('ptype')
    node = NodeProcess('obstacle_node', ['-r', f'__ns:={namespace}', '--params-file',
                                         str(params)], tmp_path=tmp_path)
    probe = RosTestNode('ptype_probe')
    try:
        result = probe.set_parameters_atomically(f'{namespace}/obstacle_node',
                                                 {'sync_tolerance': 1, 'min_range': 1})
        assert result.successful, result.reason
        assert 'using the default' not in node.output()
        assert node.alive()
    finally:
        probe.close()
        assert node.stop() == 0
    bad = NodeProcess('depth_node', ['-p', 'scale.camera_height:=two', '-p',
                                     'model.pretrained:=false'], tmp_path=tmp_path)
    assert bad.process.wait(120) == 1
    lines = [line for line in bad.output().splitlines() if 'scale.camera_height' in line]
    assert len(lines) == 1 and 'cannot start' in lines[0], bad.output()


@pytest.mark.parametrize('overrides, name', [({'min_range': 30.0, 'max_range': 10.0}, 'range'),
                                             ({'class_ids': 5}, 'class_ids')])
def test_obstacle_node_refuses_settings_that_cannot_work_together(context, overrides, name):
    from midas_ros.ros.obstacle_node import ObstacleNode
    with pytest.raises(BadParameter, match=name):
        ObstacleNode(context=context, parameter_overrides=[
            Parameter(key, value=value) for key, value in overrides.items()])


def test_a_cameras_own_override_takes_whole_numbers_and_refuses_bad_ones(context):
    """``front.scale.camera_height: 2`` (a camera's own override, issue 21) is 2.0 like the
    node's own parameter, in later sets too; ``front.scale.camera_height: two`` stops the start
    naming that parameter."""
    from midas_ros.ros.depth_node_params import camera_rows
    node = make_node(context, {'cameras': ['front'], 'front.scale.camera_height': 2})
    values = declare_parameters(node, DEPTH_NODE_PARAMS)
    values.update(declare_parameters(node, camera_rows('front', values)))
    assert values['front.scale.camera_height'] == 2.0
    assert node.get_parameter('front.scale.camera_height').type_ == Parameter.Type.DOUBLE
    # One pre-set callback for both tables: a set of a node and a camera parameter at once.
    result = node.set_parameters_atomically([Parameter('front.scale.camera_height', value=3),
                                             Parameter('scale.camera_height', value=1)])
    assert result.successful, result.reason
    assert node.get_parameter('front.scale.camera_height').value == 3.0
    node.destroy_node()
    node = make_node(context, {'cameras': ['front'], 'front.scale.camera_height': 'two'})
    values = declare_parameters(node, DEPTH_NODE_PARAMS)
    with pytest.raises(BadParameter, match='front.scale.camera_height'):
        declare_parameters(node, camera_rows('front', values))
    node.destroy_node()
