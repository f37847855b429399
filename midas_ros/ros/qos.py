"""QoS profiles from the parameter strings every midas_ros node accepts.

- ``sensor_data``: best effort, keep last ``depth``. For camera streams: a late frame is worth
  nothing, and a best-effort subscriber matches both best-effort and reliable publishers.
- ``reliable``: reliable, keep last ``depth``. For outputs: a reliable publisher matches every
  subscriber, best-effort ones included.
- ``default``: the RMW's own reliability and durability (Fast DDS: reliable, volatile; or what
  an XML profile chooses), keep last ``depth``.

``sensor_data`` and ``reliable`` are volatile: nothing is replayed to late subscribers.
"""
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data, qos_profile_system_default)

_BASE_PROFILES = {
    'sensor_data': qos_profile_sensor_data,
    'reliable': QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                           reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.VOLATILE),
    'default': qos_profile_system_default,
}
QOS_NAMES = tuple(_BASE_PROFILES)


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
