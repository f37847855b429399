"""Start depth_node on a robot's camera.

    ros2 launch midas_ros depth.launch.py image:=/camera/color/image_raw \
        camera_info:=/camera/color/camera_info model:=dpt_swin2_tiny_256 device:=cuda
    ros2 launch midas_ros depth.launch.py cameras:=front,rear   # front/image, rear/image...
    ros2 launch midas_ros depth.launch.py pretrained:=false     # offline: random weights
    ros2 launch midas_ros depth.launch.py weights:=/path/ft.pt  # python -m midas_ros finetune's

Every other parameter comes from ``params_file`` (default: the package's config/depth_node.yaml,
which documents each one); ``model``, ``device``, ``pretrained`` and ``weights``, when given,
override it. depth_node is a lifecycle node: ``autostart:=false`` leaves it unconfigured for a
lifecycle manager. If depth_node cannot start (no weights, a bad parameter file) the launch ends
with one line saying why; Ctrl-C (once or twice) and SIGTERM stop it cleanly
(midas_ros/ros/launch_support.py).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from midas_ros.ros.launch_support import (NODE_ENV, camera_overrides,
                                          end_launch_when_a_node_fails,
                                          network_arguments, network_overrides,
                                          no_keyboard_interrupt)


def _depth_node(context):
    depth_node = Node(
        package='midas_ros', executable='depth_node', name='depth_node',
        namespace=LaunchConfiguration('namespace'), output='screen', additional_env=NODE_ENV,
        parameters=[LaunchConfiguration('params_file'), network_overrides(context),
                    camera_overrides(context), {'autostart': LaunchConfiguration('autostart')}],
        # image.transport compressed subscribes '<remapped image>/compressed'.
        remappings=[('image', LaunchConfiguration('image')),
                    ('camera_info', LaunchConfiguration('camera_info'))],
    )
    return [depth_node] + end_launch_when_a_node_fails([depth_node])


def generate_launch_description():
    no_keyboard_interrupt()
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
        *network_arguments(),
        DeclareLaunchArgument('cameras', default_value='',
                              description="cameras served by the one node, e.g. 'front,rear': "
                              'camera front reads front/image, front/camera_info and publishes '
                              "front/depth/*; empty: params_file's cameras (default: one "
                              'camera on image, camera_info)'),
        DeclareLaunchArgument('autostart', default_value='true',
                              description='false: leave depth_node unconfigured for a '
                              'lifecycle manager (ros2 lifecycle set ... configure)'),
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=_depth_node)])
