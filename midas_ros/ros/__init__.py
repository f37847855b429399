"""The ROS 2 side of midas_ros: nodes, message conversions and QoS; the only rclpy importer.

Nothing is imported here, so ``import midas_ros.ros.qos`` does not load every node.
"""
