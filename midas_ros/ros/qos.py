"""QoS profiles from the parameter strings every midas_ros node accepts.

- ``sensor_data``: best effort, keep last ``depth``. For camera streams: a late frame is worth
  nothing, and a best-effort subscriber matches both best-effort and reliable publishers.
- ``reliable``: reliable, keep last ``depth``. For outputs: a reliable publisher matches every
  subscriber, best-effort ones included.
- ``default``: the RMW's own reliability and durability (Fast DDS: reliable, volatile; or what
  an XML profile chooses), keep last ``depth``.

- ``auto`` (subscriptions only): follow the publishers of the topic (:func:`matching_qos`).

``sensor_data`` and ``reliable`` are volatile: nothing is replayed to late subscribers.
"""
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data, qos_profile_system_default)

from midas_ros.ros.steady_timer import create_steady_timer

_BASE_PROFILES = {
    'sensor_data': qos_profile_sensor_data,
    'reliable': QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                           reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.VOLATILE),
    'default': qos_profile_system_default,
}
QOS_NAMES = tuple(_BASE_PROFILES)
AUTO_QOS = 'auto'
SUBSCRIPTION_QOS_NAMES = (AUTO_QOS,) + QOS_NAMES


def qos_profile(name, depth=1):
    """The QoS profile called ``name`` (one of QOS_NAMES), keeping the last ``depth`` messages.

    Raises ValueError naming the accepted values, so a node can reject a bad parameter with a
    message the user understands.
    """
    if name not in _BASE_PROFILES:
        raise ValueError(f"unknown QoS '{name}' (expected one of: {', '.join(QOS_NAMES)})")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f'QoS depth must be an integer >= 1, got {depth!r}')
    base = _BASE_PROFILES[name]
    return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST,
                      reliability=base.reliability, durability=base.durability)


def matching_qos(offered, depth):
    """A subscription QoS that every offered (publisher) profile matches, as rosbag2 adapts.

    Reliable only when every publisher is reliable, transient local only when every one is
    (a latched camera_info), else best effort / volatile. A best-effort subscription matches any
    publisher, but a reliable publisher then sends to it best effort: measured here, a stock
    Fast DDS publisher's 640x480 depth images reached a best-effort subscriber 12-16 times in
    30, and a reliable one 30 in 30.
    """
    offered = list(offered)
    reliable = bool(offered) and all(
        p.reliability == ReliabilityPolicy.RELIABLE for p in offered)
    transient = bool(offered) and all(
        p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in offered)
    return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST,
                      reliability=(ReliabilityPolicy.RELIABLE if reliable
                                   else ReliabilityPolicy.BEST_EFFORT),
                      durability=(DurabilityPolicy.TRANSIENT_LOCAL if transient
                                  else DurabilityPolicy.VOLATILE))


class MatchingSubscription:
    """A subscription whose QoS follows the publishers of its topic (:func:`matching_qos`).

    Re-checked every ``period`` s and re-created when the answer changes; nothing is subscribed
    before a publisher is seen.
    """

    def __init__(self, node, msg_type, topic, callback, depth, period=0.5, raw=False):
        self._node, self._msg_type, self._callback, self._depth = node, msg_type, callback, depth
        self._raw = raw
        self._topic = node.resolve_topic_name(topic)
        self._subscription = None
        self.policies = None        # (reliability, durability) subscribed with
        self._update()
        # Steady: under use_sim_time a paused /clock must not stop the graph watch.
        self._timer = create_steady_timer(node, period, self._update)

    def _update(self):
        publishers = self._node.get_publishers_info_by_topic(self._topic)
        if not publishers:
            return
        profile = matching_qos((info.qos_profile for info in publishers), self._depth)
        policies = (profile.reliability, profile.durability)
        if policies == self.policies:
            return
        if self._subscription is not None:
            self._node.destroy_subscription(self._subscription)
        self._subscription = self._node.create_subscription(self._msg_type, self._topic,
                                                            self._callback, profile,
                                                            raw=self._raw)
        self.policies = policies
        self._node.get_logger().info(f'subscribed to {self._topic} {policies[0].name.lower()}'
                                     f', {policies[1].name.lower()} (as its publishers)')

    def destroy(self):
        """Unsubscribe and stop following the publishers."""
        self._node.destroy_timer(self._timer)
        if self._subscription is not None:
            self._node.destroy_subscription(self._subscription)
        self._subscription, self.policies = None, None


def subscribe(node, msg_type, topic, callback, qos, depth, raw=False):
    """A subscription with the named QoS (one of SUBSCRIPTION_QOS_NAMES): 'auto' gives a
    :class:`MatchingSubscription`. ``raw``: the callback gets the serialized bytes."""
    if qos == AUTO_QOS:
        return MatchingSubscription(node, msg_type, topic, callback, depth, raw=raw)
    return node.create_subscription(msg_type, topic, callback, qos_profile(qos, depth=depth),
                                    raw=raw)


def unsubscribe(node, subscription):
    """Undo :func:`subscribe` (a lifecycle node's deactivate)."""
    if isinstance(subscription, MatchingSubscription):
        subscription.destroy()
    else:
        node.destroy_subscription(subscription)


def transport_topic(node, base, transport):
    """The topic carrying ``base`` (an image topic name as the node sees it, before remapping)
    in ``transport``: raw is ``base`` itself; compressed is ``<resolved base>/compressed``, the
    remapped and namespaced name plus the suffix, as image_transport names it since
    ros-perception/image_common#326 (so ``-r image:=/cam/image_raw`` moves both)."""
    if transport == 'raw':
        return base
    return f'{node.resolve_topic_name(base)}/{transport}'
