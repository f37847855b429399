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
        # The same table as `python -m midas_ros <executable>` (midas_ros/__main__.py).
        'console_scripts': [
            'depth_node = midas_ros.ros.depth_node:main',
            'obstacle_node = midas_ros.ros.obstacle_node:main',
            'depth_cloud_node = midas_ros.ros.depth_cloud_node:main',
            'camera_source = midas_ros.ros.camera_source:main',
            'synthetic_detector = midas_ros.ros.synthetic_detector:main',
            'recorder = midas_ros.ros.recorder:main',
            'pipeline = midas_ros.tools.pipeline:main',
            'demo = midas_ros.tools.demo:main',
            'infer = midas_ros.tools.infer:main',
            'benchmark = midas_ros.tools.benchmark:main',
            'calibrate_scale = midas_ros.tools.calibrate_scale:main',
            'evaluate_metric = midas_ros.tools.evaluate_metric:main',
            'finetune = midas_ros.tools.finetune:main',
            'evaluate = midas_ros.tools.evaluate:main',
            'export = midas_ros.tools.export:main',
            'gpu_check = midas_ros.tools.gpu_check:main',
        ],
    },
)
