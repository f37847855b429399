"""Start depth_cloud_node on any depth camera (or on depth_node's output).

    ros2 launch midas_ros depth_cloud.launch.py depth:=/camera/depth/image_rect_raw \
        camera_info:=/camera/depth/camera_info ground_frame:=base_footprint

It publishes depth/points (depth edges removed), depth/scan, depth/obstacle_points (the points
between two heights above the floor, voxel-downsampled: what Nav2's obstacle/voxel layer or STVL
should mark from) and depth/confidence, each only while subscribed. Every other parameter comes
from ``params_file`` (default: the package's config/depth_cloud_node.yaml, which documents each
one). A lifecycle node: ``autostart:=false`` leaves it unconfigured for a lifecycle manager.
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
        DeclareLaunchArgument('params_file', default_value=os.path.join(
            config, 'depth_cloud_node.yaml'), description='depth_cloud_node parameters (YAML)'),
        DeclareLaunchArgument('depth', default_value='depth/image',
                              description='depth image topic (32FC1 m or 16UC1 mm)'),
        DeclareLaunchArgument('camera_info', default_value='depth/camera_info',
                              description='CameraInfo of the depth image'),
        DeclareLaunchArgument('ground_frame', default_value='',
                              description='frame whose z = 0 plane is the floor (e.g. '
                              'base_footprint); empty: scale.camera_height/_pitch_deg/_roll_deg'),
        DeclareLaunchArgument('autostart', default_value='true',
                              description='false: leave depth_cloud_node unconfigured for a '
                              'lifecycle manager'),
    ]
    node = Node(
        package='midas_ros', executable='depth_cloud_node', name='depth_cloud_node',
        namespace=LaunchConfiguration('namespace'), output='screen',
        parameters=[LaunchConfiguration('params_file'), {
            'scale.ground_frame': LaunchConfiguration('ground_frame'),
            'autostart': LaunchConfiguration('autostart'),
        }],
        remappings=[('depth/image', LaunchConfiguration('depth')),
                    ('depth/camera_info', LaunchConfiguration('camera_info'))],
    )
    return LaunchDescription(arguments + [node])
