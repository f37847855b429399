"""The robot-side pipeline: depth_node -> obstacle_node, optionally fed by camera_source.

    ros2 launch midas_ros pipeline.launch.py image:=/camera/color/image_raw \
        camera_info:=/camera/color/camera_info detections:=/yolo/detections
    ros2 launch midas_ros pipeline.launch.py camera_source:=true     # built-in synthetic scene
    ros2 launch midas_ros pipeline.launch.py cameras:=front,rear     # front/image, rear/image...

The same processes and YAML files as ``python -m midas_ros pipeline`` (config/<node>.yaml; the
synthetic scene adds config/synthetic_scene.yaml and its stand-in synthetic_detector). Every
parameter default lives in those files; pass your own with the *_params arguments.
depth_node and obstacle_node are lifecycle nodes: ``autostart:=false`` leaves them unconfigured
for a lifecycle manager.
"""
import os
import re

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def camera_names(text):
    """The ``cameras`` launch argument ('front,rear' or '[front, rear]') as a list."""
    return [name for name in re.split(r'[\s,\[\]]+', text) if name]


def with_cameras(parameters, context):
    """``parameters`` plus ``cameras`` when the launch argument names some; with none, the
    YAML file's ``cameras`` stands (an empty list cannot be passed as a launch parameter)."""
    names = camera_names(LaunchConfiguration('cameras').perform(context))
    return parameters + [{'cameras': names}] if names else parameters


def generate_launch_description():
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
        DeclareLaunchArgument('cameras', default_value='',
                              description="cameras served by depth_node and obstacle_node, "
                              "e.g. 'front,rear': front/image + front/detections -> "
                              "front/obstacles...; empty: the YAML files' cameras (default: "
                              'one camera)'),
        DeclareLaunchArgument('autostart', default_value='true',
                              description='false: leave depth_node and obstacle_node '
                              'unconfigured for a lifecycle manager'),
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=pipeline_nodes)])


def pipeline_nodes(context):
    namespace = LaunchConfiguration('namespace')
    with_source = IfCondition(LaunchConfiguration('camera_source'))
    # The lifecycle nodes' autostart comes from the argument, over their YAML files.
    autostart = {'autostart': LaunchConfiguration('autostart')}
    camera_remaps = [('image', LaunchConfiguration('image')),
                     ('image/compressed', [LaunchConfiguration('image'), '/compressed']),
                     ('camera_info', LaunchConfiguration('camera_info'))]
    return [
        Node(package='midas_ros', executable='camera_source', name='camera_source',
             namespace=namespace, output='screen', condition=with_source,
             parameters=[LaunchConfiguration('source_params'),
                         LaunchConfiguration('scene_params')],
             remappings=camera_remaps),
        # Publishes only while camera_source shows the synthetic scene (it relays its truth).
        Node(package='midas_ros', executable='synthetic_detector', name='synthetic_detector',
             namespace=namespace, output='screen', condition=with_source,
             parameters=[LaunchConfiguration('scene_params')],
             remappings=[('detections', LaunchConfiguration('detections'))]),
        Node(package='midas_ros', executable='depth_node', name='depth_node',
             namespace=namespace, output='screen',
             parameters=with_cameras([LaunchConfiguration('depth_params'), autostart], context),
             remappings=camera_remaps),
        Node(package='midas_ros', executable='obstacle_node', name='obstacle_node',
             namespace=namespace, output='screen',
             parameters=with_cameras([LaunchConfiguration('obstacle_params'), autostart],
                                     context),
             remappings=[('detections', LaunchConfiguration('detections'))]),
    ]
