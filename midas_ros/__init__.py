"""midas_ros: real-time monocular depth (MiDaS) for ROS 2.

The sub-packages split along one line: everything outside ``midas_ros.ros`` is ROS-free (numpy and
torch only) and can be imported and tested without rclpy; ``midas_ros.ros`` holds the thin nodes
that translate messages and parameters into calls of that core.
"""

__version__ = '0.1.0'
