"""The managed-node (ROS 2 lifecycle) behaviour depth_node and obstacle_node share.

Like the ROS 2 ``lifecycle_py`` demo: parameters are declared when the node is created (so
``ros2 param`` works in every state and a lifecycle manager may set them before configuring);
``configure`` builds what the node needs (depth_node: the model and its backend), ``activate``
subscribes and starts processing and publishing, ``deactivate`` stops all per-frame work (the
inputs are unsubscribed, the outputs go silent), ``cleanup`` frees what configure built, and
``shutdown`` does whatever of that is still to do and then ends the process (status 0).

A node subclasses :class:`ManagedNode` and implements ``configure``, ``activate``,
``deactivate`` and ``cleanup`` as plain methods that raise to refuse a transition: the error is
logged as one line and the node stays where it was. With the ``autostart`` parameter (default
true) :meth:`ManagedNode.start` walks to active at start-up, so ``ros2 run`` behaves as an
unmanaged node would; ``autostart:=false`` leaves the node unconfigured for ``ros2 lifecycle set``
or a lifecycle manager.
"""
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

from midas_ros.ros.parameters import Param
from midas_ros.ros.steady_timer import create_steady_timer

AUTOSTART = Param('autostart', True, 'configure and activate at start-up; false: stay '
                  'unconfigured until a lifecycle manager (or ros2 lifecycle set) configures '
                  'and activates the node', read_only=True)
_DONE = {'configure': 'configured', 'activate': 'activated', 'deactivate': 'deactivated',
         'cleanup': 'cleaned up'}
# After a shutdown transition the process ends; the delay lets the ChangeState response go out.
_EXIT_DELAY_S = 0.2


class StartupError(RuntimeError):
    """The node could not be brought to active at start-up; the text says why."""


class ManagedNode(LifecycleNode):
    """A lifecycle node whose transitions call ``configure``/``activate``/``deactivate``/
    ``cleanup`` (override them) and log, as one line, why one failed."""

    def __init__(self, node_name, **kwargs):
        super().__init__(node_name, **kwargs)
        self.configured = False      # configure succeeded and cleanup has not run since
        self.active = False          # per-frame work allowed
        self.finalized = False       # shutdown done: the process should end
        self._last_error = None
        self._starting = False
        self._exit_timer = None

    # -- what a node implements --------------------------------------------------------------

    def configure(self):
        """Build what the node needs (model, publishers); raise to stay unconfigured."""

    def activate(self):
        """Subscribe and start the per-frame work; raise to stay inactive."""

    def deactivate(self):
        """Stop every per-frame work (unsubscribe, no processing); should not raise."""

    def cleanup(self):
        """Free what ``configure`` built; should not raise."""

    # -- start-up and end --------------------------------------------------------------------

    def start(self):
        """Configure and activate when the ``autostart`` parameter is true; StartupError (with
        the reason) if either fails. Otherwise the node waits, unconfigured, for a lifecycle
        manager."""
        if not self.get_parameter(AUTOSTART.name).value:
            self.get_logger().info('autostart is false: unconfigured, waiting for a lifecycle '
                                   'manager (ros2 lifecycle set <node> configure)')
            return
        self._starting = True       # the caller reports a failure (one line, not two)
        try:
            for name, trigger in (('configure', self.trigger_configure),
                                  ('activate', self.trigger_activate)):
                self._last_error = None
                if trigger() != TransitionCallbackReturn.SUCCESS:
                    raise StartupError(self._last_error or f'{name} transition failed')
        finally:
            self._starting = False

    def release(self):
        """Stop and free everything, whatever the state (the process is ending)."""
        if self.active:
            self._call('deactivate', self._deactivate_all, log=False)
        if self.configured:
            self._call('cleanup', self._cleanup_all, log=False)

    def destroy_node(self):
        # rclpy's LifecycleNode leaves its state machine, which refers to the node's handle, to
        # the garbage collector; collected after the node is gone (or in a forked child, as
        # flake8's workers are) it crashes the process. Release it first, explicitly.
        self._state_machine.destroy_when_not_in_use()
        return super().destroy_node()

    # -- rclpy lifecycle callbacks -----------------------------------------------------------

    def on_configure(self, state):
        result = self._call('configure', self._configure_all)
        if result != TransitionCallbackReturn.SUCCESS:
            self._call('cleanup', self._cleanup_all, log=False)    # no half-built node
        return result

    def on_activate(self, state):
        result = self._call('activate', self._activate_all)
        if result != TransitionCallbackReturn.SUCCESS:
            self._call('deactivate', self._deactivate_all, log=False)
        return result

    def on_deactivate(self, state):
        return self._call('deactivate', self._deactivate_all)

    def on_cleanup(self, state):
        return self._call('cleanup', self._cleanup_all)

    def on_shutdown(self, state):
        self.release()
        self.finalized = True
        self.get_logger().info('shut down (finalized): the process ends')
        self._exit_timer = create_steady_timer(self, _EXIT_DELAY_S, self._exit)
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state):
        self.release()
        return TransitionCallbackReturn.SUCCESS      # back to unconfigured

    # -- internals ---------------------------------------------------------------------------

    def _configure_all(self):
        self.configure()
        self.configured = True

    def _activate_all(self):
        self.activate()
        super().on_activate(None)      # enables the lifecycle publishers
        self.active = True

    def _deactivate_all(self):
        self.active = False            # first: the processing loop stops taking frames
        self.deactivate()              # waits for the frame in flight, which may publish
        super().on_deactivate(None)

    def _cleanup_all(self):
        self.active = False
        self.configured = False
        self.cleanup()

    def _call(self, name, function, log=True):
        try:
            function()
        except Exception as error:      # any reason to refuse: one line, state unchanged
            expected = isinstance(error, (ValueError, RuntimeError, OSError))
            self._last_error = str(error) if expected else f'{type(error).__name__}: {error}'
            if log and not self._starting:
                self.get_logger().error(f'{name} failed: {self._last_error}')
            return TransitionCallbackReturn.FAILURE
        if log:
            self.get_logger().info(_DONE[name])
        return TransitionCallbackReturn.SUCCESS

    def _exit(self):
        self._exit_timer.cancel()
        self.context.try_shutdown()
