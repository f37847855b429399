"""The ``main`` every midas_ros node shares: init, build, spin until Ctrl-C, clean up."""
import rclpy
from rclpy.executors import ExternalShutdownException


def run_node(create_node, name, startup_errors=(), args=None):
    """Run the node ``create_node()`` builds; returns the process exit status.

    Errors of the types in ``startup_errors`` raised while the node is built (missing weights, a
    file that cannot be written...) end the process with one log line and status 1, not a
    traceback. Ctrl-C and an external shutdown are a normal end (status 0).
    """
    rclpy.init(args=args)
    node = None
    try:
        try:
            node = create_node()
        except startup_errors as error:
            rclpy.logging.get_logger(name).fatal(f'cannot start: {error}')
            return 1
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
