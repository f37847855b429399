"""Start depth_node on a robot's camera.

    ros2 launch midas_ros depth.launch.py image:=/camera/color/image_raw \
        camera_info:=/camera/color/camera_info model:=dpt_swin2_tiny_256 device:=cuda
    ros2 launch midas_ros depth.launch.py cameras:=front,rear   # front/image, rear/image...

Every other parameter comes from ``params_file`` (default: the package's config/depth_node.yaml,
which documents each one); the arguments below override it. depth_node is a lifecycle node:
``autostart:=false`` leaves it unconfigured for a lifecycle manager.
"""
import os
import re

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
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
                              description='namespace of the node and its relative topics'),
        DeclareLaunchArgument('params_file', default_value=os.path.join(config,
                                                                        'depth_node.yaml'),
                              description='depth_node parameters (YAML)'),
        DeclareLaunchArgument('image', default_value='image',
                              description='camera image topic (sensor_msgs/Image)'),
        DeclareLaunchArgument('camera_info', default_value='camera_info',
                              description='camera info topic (sensor_msgs/CameraInfo)'),
        DeclareLaunchArgument('model', default_value='midas_v21_small_256',
                              description='MiDaS variant (model.name)'),
        DeclareLaunchArgument('device', default_value='auto',
                              description='auto | cpu | cuda | cuda:N'),
        DeclareLaunchArgument('pretrained', default_value='true',
                              description='false: random weights (no checkpoint needed)'),
        DeclareLaunchArgument('cameras', default_value='',
                              description="cameras served by the one node, e.g. 'front,rear': "
                              'camera front reads front/image, front/camera_info and publishes '
                              "front/depth/*; empty: params_file's cameras (default: one "
                              'camera on image, camera_info)'),
        DeclareLaunchArgument('autostart', default_value='true',
                              description='false: leave depth_node unconfigured for a '
                              'lifecycle manager (ros2 lifecycle set ... configure)'),
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=depth_node)])


def depth_node(context):
    return [Node(
        package='midas_ros', executable='depth_node', name='depth_node',
        namespace=LaunchConfiguration('namespace'), output='screen',
        parameters=with_cameras([LaunchConfiguration('params_file'), {
            'model.name': LaunchConfiguration('model'),
            'device': LaunchConfiguration('device'),
            'model.pretrained': LaunchConfiguration('pretrained'),
            'autostart': LaunchConfiguration('autostart'),
        }], context),
        remappings=[('image', LaunchConfiguration('image')),
                    ('image/compressed', [LaunchConfiguration('image'), '/compressed']),
                    ('camera_info', LaunchConfiguration('camera_info'))],
    )]
