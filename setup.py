"""ament_python build of midas_ros: the package, its executables, launch and config files."""
from glob import glob

from setuptools import find_packages, setup

package_name = 'midas_ros'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*')),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='midas_ros maintainers',
    maintainer_email='maintainers@midas-ros.dev',
    description='Real-time monocular depth (MiDaS) for ROS 2: depth, point clouds, obstacles.',
    license='MIT',
    extras_require={'test': ['pytest']},
    entry_points={
        # One entry point per row of midas_ros/executables.py's EXECUTABLES (a test checks it).
        'console_scripts': [
            'depth_node = midas_ros.executables:depth_node',
            'obstacle_node = midas_ros.executables:obstacle_node',
            'depth_cloud_node = midas_ros.executables:depth_cloud_node',
            'camera_source = midas_ros.executables:camera_source',
            'synthetic_detector = midas_ros.executables:synthetic_detector',
            'recorder = midas_ros.executables:recorder',
            'pipeline = midas_ros.executables:pipeline',
            'demo = midas_ros.executables:demo',
            'infer = midas_ros.executables:infer',
            'benchmark = midas_ros.executables:benchmark',
            'calibrate_scale = midas_ros.executables:calibrate_scale',
            'evaluate_metric = midas_ros.executables:evaluate_metric',
            'finetune = midas_ros.executables:finetune',
            'evaluate = midas_ros.executables:evaluate',
            'export = midas_ros.executables:export',
            'gpu_check = midas_ros.executables:gpu_check',
        ],
    },
)
