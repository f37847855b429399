"""The robot-side pipeline: depth_node -> obstacle_node, optionally fed by camera_source.

    ros2 launch midas_ros pipeline.launch.py image:=/camera/color/image_raw \
        camera_info:=/camera/color/camera_info detections:=/yolo/detections
    ros2 launch midas_ros pipeline.launch.py camera_source:=true     # built-in synthetic scene
    ros2 launch midas_ros pipeline.launch.py cameras:=front,rear     # front/image, rear/image...
    ros2 launch midas_ros pipeline.launch.py camera_source:=true pretrained:=false   # offline

The same processes and YAML files as ``python -m midas_ros pipeline`` (config/<node>.yaml; the
synthetic scene adds config/synthetic_scene.yaml and its stand-in synthetic_detector). Every
parameter default lives in those files; pass your own with the *_params arguments.
``model``, ``device``, ``pretrained`` and ``weights``, when given, set depth_node's network
over its file (``pretrained:=false``: random weights, to try the pipeline offline;
``weights:=ft.pt``: a fine-tuned checkpoint). depth_node and
obstacle_node are lifecycle nodes: ``autostart:=false`` leaves them unconfigured for a lifecycle
manager. A node that cannot start (no weights, a bad parameter file) or dies ends the whole
launch with one line saying which and why; Ctrl-C (once or twice) and SIGTERM stop every node
cleanly (midas_ros/ros/launch_support.py).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from midas_ros.ros.launch_support import (NODE_ENV, camera_overrides,
                                          end_launch_when_a_node_fails,
                                          network_arguments, network_overrides,
                                          no_keyboard_interrupt)


def _camera_remaps():
    # image.transport compressed subscribes '<remapped image>/compressed'.
    return [('image', LaunchConfiguration('image')),
            ('camera_info', LaunchConfiguration('camera_info'))]


def _nodes(context):
    namespace = LaunchConfiguration('namespace')
    with_source = IfCondition(LaunchConfiguration('camera_source'))
    # The lifecycle nodes' autostart comes from the argument, over their YAML files.
    autostart = {'autostart': LaunchConfiguration('autostart')}
    cameras = camera_overrides(context)     # only when the argument is set
    nodes = [
        Node(package='midas_ros', executable='camera_source', name='camera_source',
             namespace=namespace, output='screen', additional_env=NODE_ENV,
             condition=with_source,
             parameters=[LaunchConfiguration('source_params'),
                         LaunchConfiguration('scene_params')],
             remappings=_camera_remaps()),
        # Publishes only while camera_source shows the synthetic scene (it relays its truth).
        Node(package='midas_ros', executable='synthetic_detector', name='synthetic_detector',
             namespace=namespace, output='screen', additional_env=NODE_ENV,
             condition=with_source,
             parameters=[LaunchConfiguration('scene_params')],
             remappings=[('detections', LaunchConfiguration('detections'))]),
        Node(package='midas_ros', executable='depth_node', name='depth_node',
             namespace=namespace, output='screen', additional_env=NODE_ENV,
             parameters=[LaunchConfiguration('depth_params'), network_overrides(context),
                         cameras, autostart],
             remappings=_camera_remaps()),
        Node(package='midas_ros', executable='obstacle_node', name='obstacle_node',
             namespace=namespace, output='screen', additional_env=NODE_ENV,
             parameters=[LaunchConfiguration('obstacle_params'), cameras, autostart],
             remappings=[('detections', LaunchConfiguration('detections'))]),
    ]
    return nodes + end_launch_when_a_node_fails(nodes)


def generate_launch_description():
    no_keyboard_interrupt()
    config = os.path.join(get_package_share_directory('midas_ros'), 'config')
    arguments = [
        DeclareLaunchArgument('namespace', default_value='',
                              description='namespace of the nodes and their relative topics'),
        DeclareLaunchArgument('camera_source', default_value='false',
                              description='true: also start camera_source (and, for the '
                              'synthetic scene, synthetic_detector)'),
        DeclareLaunchArgument('depth_params', default_value=os.path.join(
            config, 'depth_node.yaml'), description='depth_node parameters (YAML)'),
        DeclareLaunchArgument('obstacle_params', default_value=os.path.join(
            config, 'obstacle_node.yaml'), description='obstacle_node parameters (YAML)'),
        DeclareLaunchArgument('source_params', default_value=os.path.join(
            config, 'camera_source.yaml'), description='camera_source parameters (YAML)'),
        DeclareLaunchArgument('scene_params', default_value=os.path.join(
            config, 'synthetic_scene.yaml'), description='synthetic scene and '
            'synthetic_detector parameters (YAML)'),
        DeclareLaunchArgument('image', default_value='image',
                              description='camera image topic (sensor_msgs/Image)'),
        DeclareLaunchArgument('camera_info', default_value='camera_info',
                              description='camera info topic (sensor_msgs/CameraInfo)'),
        DeclareLaunchArgument('detections', default_value='detections',
                              description='2D detections topic (vision_msgs/Detection2DArray)'),
        *network_arguments(),
        DeclareLaunchArgument('cameras', default_value='',
                              description="cameras served by depth_node and obstacle_node, "
                              "e.g. 'front,rear': front/image + front/detections -> "
                              "front/obstacles...; empty: the YAML files' cameras (default: "
                              'one camera)'),
        DeclareLaunchArgument('autostart', default_value='true',
                              description='false: leave depth_node and obstacle_node '
                              'unconfigured for a lifecycle manager'),
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=_nodes)])
