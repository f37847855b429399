"""Start depth_node on a robot's camera.

    ros2 launch midas_ros depth.launch.py image:=/camera/color/image_raw \
        camera_info:=/camera/color/camera_info model:=dpt_swin2_tiny_256 device:=cuda

Every other parameter comes from ``params_file`` (default: the package's config/depth_node.yaml,
which documents each one); the arguments below override it. depth_node is a lifecycle node:
``autostart:=false`` leaves it unconfigured for a lifecycle manager.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


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
        DeclareLaunchArgument('autostart', default_value='true',
                              description='false: leave depth_node unconfigured for a '
                              'lifecycle manager (ros2 lifecycle set ... configure)'),
    ]
    depth_node = Node(
        package='midas_ros', executable='depth_node', name='depth_node',
        namespace=LaunchConfiguration('namespace'), output='screen',
        parameters=[LaunchConfiguration('params_file'), {
            'model.name': LaunchConfiguration('model'),
            'device': LaunchConfiguration('device'),
            'model.pretrained': LaunchConfiguration('pretrained'),
            'autostart': LaunchConfiguration('autostart'),
        }],
        remappings=[('image', LaunchConfiguration('image')),
                    ('image/compressed', [LaunchConfiguration('image'), '/compressed']),
                    ('camera_info', LaunchConfiguration('camera_info'))],
    )
    return LaunchDescription(arguments + [depth_node])
