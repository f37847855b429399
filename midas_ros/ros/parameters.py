"""Declared, documented, validated node parameters from one table per node.

Each node lists its parameters once as ``Param`` rows (name, default, description, limits). This
module turns the table into rclpy declarations with descriptors (ranges and read-only flags that
rqt and ``ros2 param describe`` show), checks values the same way at start-up and at run time,
and makes sure a rejected change is rejected whole. ``config/<node>.yaml`` documents the same
defaults; a test keeps the two in step.
"""
import re
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.parameter import Parameter


@dataclass(frozen=True)
class Param:
    """One parameter: its default fixes its type; limits are checked before anything applies."""

    name: str
    default: object
    description: str
    choices: Tuple[str, ...] = ()
    pattern: str = ''            # a regular expression a string value must match whole
    min: Optional[float] = None
    max: Optional[float] = None
    read_only: bool = False      # needs a restart (model, device, topics, QoS)

    def check(self, value):
        """The reason ``value`` is not acceptable, or None."""
        if self.choices and value not in self.choices:
            return f"{self.name}: '{value}' is not one of {', '.join(self.choices)}"
        if self.pattern and not re.fullmatch(self.pattern, str(value)):
            return f"{self.name}: '{value}' does not match {self.pattern}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value != value:  # NaN
                return f'{self.name}: NaN is not a valid value'
            if self.min is not None and value < self.min:
                return f'{self.name}: {value} is below the minimum {self.min}'
            if self.max is not None and value > self.max:
                return f'{self.name}: {value} is above the maximum {self.max}'
        return None

    def descriptor(self):
        text = self.description
        if self.choices:
            text += f" (one of: {', '.join(self.choices)})"
        descriptor = ParameterDescriptor(description=text, read_only=self.read_only)
        if self.pattern:
            descriptor.additional_constraints = f'matches {self.pattern}'
        # rclpy ranges need bounds on both sides; one-sided limits stay in our own check.
        if self.min is not None and self.max is not None:
            if isinstance(self.default, bool):
                pass
            elif isinstance(self.default, int):
                descriptor.integer_range = [IntegerRange(
                    from_value=int(self.min), to_value=int(self.max), step=0)]
            elif isinstance(self.default, float):
                descriptor.floating_point_range = [FloatingPointRange(
                    from_value=float(self.min), to_value=float(self.max), step=0.0)]
        return descriptor


class BadParameter(ValueError):
    """A start-up parameter value that cannot be used; the text names the parameter."""


def _is_float_row(param):
    return isinstance(param.default, float) or (
        isinstance(param.default, (list, tuple)) and bool(param.default)
        and all(isinstance(item, float) for item in param.default))


def _as_declared_type(param, value):
    """``value`` in the type of ``param``'s default where that loses nothing: a whole number
    given for a floating-point parameter is that number (2 -> 2.0), as YAML files and
    ``-p name:=2`` write it (rclcpp#979); a list of whole numbers for a list of floats likewise.
    Anything else is returned unchanged (the type check then refuses it)."""
    if not _is_float_row(param):
        return value

    def whole(item):
        return isinstance(item, int) and not isinstance(item, bool)
    if whole(value):
        return float(value)
    if isinstance(value, (list, tuple)) and value and all(whole(item) for item in value):
        return [float(item) for item in value]
    return value


def _coerce_on_set(rows):
    """A pre-set callback: ``ros2 param set`` / ``ros2 param load`` of a whole number for a
    floating-point parameter sets that number as a double before rclpy checks the type."""
    def callback(parameters):
        coerced = []
        for parameter in parameters:
            row = rows.get(parameter.name)
            value = parameter.value
            if row is not None and _as_declared_type(row, value) is not value:
                parameter = Parameter(parameter.name, value=_as_declared_type(row, value))
            coerced.append(parameter)
        return coerced
    return callback


def _check_type(param, value):
    """BadParameter unless ``value`` has the type of ``param``'s default (declaring with the
    value itself would give the parameter the value's type)."""
    if isinstance(param.default, (list, tuple)) and not param.default:
        if isinstance(value, (list, tuple)):
            return      # an empty default list fixes no element type
        raise BadParameter(f'parameter {param.name}: {value!r} is not a list')
    expected = Parameter.Type.from_parameter_value(param.default)
    given = Parameter.Type.from_parameter_value(value)
    if given != expected:
        raise BadParameter(f"parameter {param.name}: {value!r} is a {given.name.lower()}, "
                           f"expected a {expected.name.lower()} (like the default "
                           f"{param.default!r})")


def declare_parameters(node, table: Sequence[Param]):
    """Declare every row and return ``{name: value}`` of what is in effect.

    A whole number given for a floating-point parameter (a parameter file's ``2``, ``-p
    x:=2``) is taken as that number, at start-up and in later sets (``ros2 param set`` /
    ``load``). A start-up value that cannot be used (wrong type, out of range) raises
    :class:`BadParameter` naming the parameter: the node does not start rather than run on a
    default the user did not ask for.
    """
    # One pre-set callback per node for all its tables (rclpy concatenates what each callback
    # returns: a second one would hand the parameters over twice, one copy uncoerced).
    rows = getattr(node, '_midas_parameter_rows', None)
    if rows is None:
        rows = node._midas_parameter_rows = {}
        node.add_pre_set_parameters_callback(_coerce_on_set(rows))
    rows.update({param.name: param for param in table})
    # rclpy reads overrides (command line, parameter files) only inside declare_parameter,
    # where a type mismatch is fatal; the override is read here first to give it the type.
    overrides = getattr(node, '_parameter_overrides', {})
    values = {}
    for param in table:
        override = overrides.get(param.name)
        try:
            if param.default == []:
                value = _declare_string_array(node, param)
            elif override is not None:
                value = _as_declared_type(param, override.value)
                _check_type(param, value)
                value = node.declare_parameter(param.name, value, param.descriptor(),
                                               ignore_override=True).value
            else:
                value = node.declare_parameter(param.name, param.default,
                                               param.descriptor()).value
        except (InvalidParameterValueException, InvalidParameterTypeException,
                TypeError) as error:
            raise BadParameter(f'parameter {param.name}: {error}') from None
        reason = param.check(value)
        if reason is not None:
            raise BadParameter(f'parameter {reason}')
        values[param.name] = value
    return values


def _declare_string_array(node, param):
    """Declare ``param`` (default ``[]``) as a string array; its value.

    From the default ``[]`` rclpy would infer a byte array (refusing ``-p cameras:=[a, b]``),
    and ``name: []`` in a YAML file arrives without any type, leaving the parameter unset; so
    it is declared by type, set to an empty string array if still unset, then given its
    descriptor (read-only ones too)."""
    descriptor = param.descriptor()
    descriptor.type = Parameter.Type.STRING_ARRAY.value
    value = node.declare_parameter(param.name, Parameter.Type.STRING_ARRAY).value
    if value is None:
        node.set_parameters([Parameter(param.name, Parameter.Type.STRING_ARRAY, [])])
        value = []
    node.set_descriptor(param.name, descriptor)
    return value


def on_set_parameters(table: Sequence[Param], current: Callable[[], dict],
                      apply: Callable[[dict], Optional[str]]):
    """A set-parameters callback: check every change, then let ``apply`` build the new state.

    ``apply`` gets the complete candidate configuration and returns a reason to refuse it (for
    example a geometry that cannot work) or None once it has swapped the new state in. Nothing
    is applied unless every change passes.
    """
    rows = {param.name: param for param in table}

    def callback(parameters):
        candidate = dict(current())
        for parameter in parameters:
            row = rows.get(parameter.name)
            if row is None:
                continue  # parameters of rclpy itself (use_sim_time, qos overrides)
            reason = row.check(parameter.value)
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
            candidate[parameter.name] = parameter.value
        reason = apply(candidate)
        return SetParametersResult(successful=reason is None, reason=reason or '')

    return callback


CAMERA_NAME_PATTERN = r'[A-Za-z][A-Za-z0-9_]*'


def camera_names(values):
    """The camera names of a node's ``cameras`` parameter (depth_node, obstacle_node:
    ``values['cameras']``) as a list; ValueError for a bad or repeated name."""
    names = list(values['cameras'] or [])
    for name in names:
        if not re.fullmatch(CAMERA_NAME_PATTERN, name):
            raise ValueError(f"cameras: '{name}' is not a camera name (a letter, then letters, "
                             'digits or _: it prefixes topics and parameters)')
    if len(set(names)) != len(names):
        raise ValueError(f'cameras: a name is repeated in {names}')
    return names


def defaults(table: Sequence[Param]):
    """``{name: default}``: what ``config/<node>.yaml`` must say."""
    return {param.name: param.default for param in table}
