"""Declare ROS 2 parameters with full descriptors and read them back validated.

A node lists its parameters once as :class:`ParameterSpec` entries (name, default,
description, range or choices). :func:`declare_parameters` turns them into
``ParameterDescriptor``\\ s (so ``ros2 param describe`` shows the description and the
range), :func:`read_parameters` returns the values checked against the same specs. Any
bad value — wrong type, out of range, not one of the choices — becomes one
:class:`~threed_llm_ros.errors.ConfigError` that names the parameter and the fix, so a
node fails fast at startup with a single clear line. So does a parameter given to the node
(parameter file or ``-p``) that it does not declare, e.g. a misspelled ``max_new_tokns``:
ROS would ignore it and run with the default, so the line names the closest declared
name instead (:func:`unknown_parameters`).

:func:`specs_from_dataclass` and :func:`dataclass_from_parameters` map a config
dataclass (whose ``__post_init__`` may raise ConfigError itself) to parameters and back.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence, TypeVar

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException, ParameterException
from rclpy.node import Node

from threed_llm_ros.errors import ConfigError

ScalarValue = bool | int | float | str

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class ParameterSpec:
    """One node parameter: default (which also fixes its type), description, allowed values."""

    name: str
    default: ScalarValue
    description: str
    minimum: float | None = None  # inclusive
    maximum: float | None = None  # inclusive
    choices: tuple[str, ...] = ()
    read_only: bool = True  # read once at startup; runtime changes would have no effect
    fix: str = ""  # how to fix a bad value; derived from the range or choices when empty

    @property
    def type_name(self) -> str:
        """'bool', 'integer', 'double' or 'string', as ROS calls the types."""
        return {bool: "bool", int: "integer", float: "double", str: "string"}[type(self.default)]

    def fix_hint(self) -> str:
        """What to write instead of a bad value."""
        if self.fix:
            return self.fix
        if self.choices:
            return f"use one of {list(self.choices)}"
        kind = {"integer": "an integer", "double": "a floating-point value"}.get(self.type_name, f"a {self.type_name}")
        if self.minimum is not None and self.maximum is not None:
            return f"use {kind} between {self.minimum:g} and {self.maximum:g}"
        if self.minimum is not None:
            return f"use {kind} >= {self.minimum:g}"
        if self.maximum is not None:
            return f"use {kind} <= {self.maximum:g}"
        return f"use {kind}"

    def descriptor(self) -> ParameterDescriptor:
        """The ROS descriptor: type, description, range (integer or floating point), read-only."""
        constraints = []
        if self.choices:
            constraints.append(f"one of {list(self.choices)}")
        descriptor = ParameterDescriptor(
            name=self.name,
            description=self.description,
            additional_constraints="; ".join(constraints),
            read_only=self.read_only,
        )
        if isinstance(self.default, bool) or isinstance(self.default, str):
            return descriptor
        if self.minimum is None and self.maximum is None:
            return descriptor
        if isinstance(self.default, int):
            low = _INT64_MIN if self.minimum is None else int(math.ceil(self.minimum))
            high = _INT64_MAX if self.maximum is None else int(math.floor(self.maximum))
            descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=0)]
        else:
            low = -sys.float_info.max if self.minimum is None else float(self.minimum)
            high = sys.float_info.max if self.maximum is None else float(self.maximum)
            descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high, step=0.0)]
        return descriptor

    def validate(self, value: Any) -> ScalarValue:
        """The value if it fits this spec, else ConfigError naming the parameter."""
        expected = type(self.default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not expected:
            raise ConfigError(
                self.name, f"got {value!r} of type {type(value).__name__}, expected a {self.type_name}",
                self.fix_hint() + (" (write floats with a decimal point, e.g. 5.0)" if expected is float else ""),
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(self.name, f"got {value}, which is not finite", self.fix_hint())
        if self.choices and value not in self.choices:
            raise ConfigError(self.name, f"got {value!r}, not one of the allowed values", self.fix_hint())
        if not isinstance(value, (bool, str)):
            if self.minimum is not None and value < self.minimum:
                raise ConfigError(self.name, f"got {value}, below the minimum {self.minimum:g}", self.fix_hint())
            if self.maximum is not None and value > self.maximum:
                raise ConfigError(self.name, f"got {value}, above the maximum {self.maximum:g}", self.fix_hint())
        return value


def declare_parameters(node: Node, specs: Iterable[ParameterSpec]) -> None:
    """Declare every spec on ``node``; rclpy's own type/range rejections become ConfigError."""
    for spec in specs:
        try:
            node.declare_parameter(spec.name, spec.default, spec.descriptor())
        except InvalidParameterTypeException as error:
            raise ConfigError(spec.name, f"has the wrong type ({error})", spec.fix_hint()
                              + (" (write floats with a decimal point, e.g. 5.0)" if spec.type_name == "double" else "")) from error
        except InvalidParameterValueException as error:
            reason = str(error).split("Reason: ", 1)[-1]
            raise ConfigError(spec.name, f"value rejected: {reason}", spec.fix_hint()) from error
        except ParameterException as error:
            raise ConfigError(spec.name, str(error), spec.fix_hint()) from error


def unknown_parameters(node: Node) -> list[str]:
    """Names given to ``node`` (parameter files, ``-p``) that it has not declared, in the given order."""
    overrides = getattr(node, "_parameter_overrides", {})  # rclpy keeps them there; there is no public accessor
    return [name for name in overrides if not node.has_parameter(name) and not name.startswith(IGNORED_PREFIXES)]


IGNORED_PREFIXES = ("qos_overrides.",)  # declared by rclpy only when a publisher allows QoS overrides


def unknown_parameter_error(node_name: str, unknown: Sequence[str], declared: Iterable[str]) -> ConfigError:
    """One ConfigError naming each unknown parameter and, where there is one, the closest declared name."""
    declared = sorted(declared)
    guesses = {name: difflib.get_close_matches(name, declared, n=1, cutoff=0.6) for name in unknown}
    named = ", ".join(f"'{name}'" + (f" (did you mean '{guesses[name][0]}'?)" if guesses[name] else "") for name in unknown)
    if len(unknown) == 1 and guesses[unknown[0]]:
        fix = f"rename it to '{guesses[unknown[0]][0]}'"
    else:
        fix = (("rename it" if len(unknown) == 1 else "rename each") + " to a declared parameter or remove it "
               f"(`ros2 param list /{node_name}` lists them)")
    problem = f"not a parameter of {node_name}, so it would be ignored and the default used"
    if len(unknown) > 1:
        problem = f"{named}: not parameters of {node_name}, so they would be ignored and the defaults used"
    elif guesses[unknown[0]]:
        problem += f" (did you mean '{guesses[unknown[0]][0]}'?)"
    return ConfigError(unknown[0], problem, fix)


def read_parameters(node: Node, specs: Iterable[ParameterSpec]) -> dict[str, ScalarValue]:
    """Current values of the declared parameters, validated against their specs; ConfigError
    first if the node was given a parameter it does not declare (a misspelling would be ignored)."""
    specs = list(specs)
    unknown = unknown_parameters(node)
    if unknown:
        declared = {spec.name for spec in specs} | set(node.list_parameters([], 0).names)
        raise unknown_parameter_error(node.get_name(), unknown, declared)
    return {spec.name: spec.validate(node.get_parameter(spec.name).value) for spec in specs}


def defaults_as_yaml_dict(node_name: str, specs: Iterable[ParameterSpec]) -> dict[str, Any]:
    """The ROS 2 parameter-file structure ``{node: {ros__parameters: {...}}}`` of the defaults.

    Dotted names nest, as ``ros2 param dump`` writes them.
    """
    parameters: dict[str, Any] = {}
    for spec in specs:
        *groups, leaf = spec.name.split(".")
        target = parameters
        for group in groups:
            target = target.setdefault(group, {})
        target[leaf] = spec.default
    return {node_name: {"ros__parameters": parameters}}


T = TypeVar("T")


def specs_from_dataclass(
    config: Any,
    descriptions: Mapping[str, str],
    *,
    prefix: str = "",
    ranges: Mapping[str, tuple[float | None, float | None]] | None = None,
    choices: Mapping[str, Sequence[str]] | None = None,
    exclude: Iterable[str] = (),
) -> list[ParameterSpec]:
    """Parameter specs for the scalar fields of a config dataclass (class or instance).

    Defaults come from the instance (or the class's field defaults); every included field
    needs a description. Fields named in ``exclude`` and non-scalar fields are skipped.
    """
    instance = config if not isinstance(config, type) else config()
    ranges, choices, excluded = ranges or {}, choices or {}, set(exclude)
    specs = []
    for dataclass_field in dataclasses.fields(instance):
        value = getattr(instance, dataclass_field.name)
        if dataclass_field.name in excluded or not isinstance(value, (bool, int, float, str)):
            continue
        if dataclass_field.name not in descriptions:
            raise ValueError(f"no description for parameter {prefix}{dataclass_field.name}")
        low, high = ranges.get(dataclass_field.name, (None, None))
        specs.append(
            ParameterSpec(
                prefix + dataclass_field.name, value, descriptions[dataclass_field.name], low, high,
                tuple(choices.get(dataclass_field.name, ())),
            )
        )
    return specs


def dataclass_from_parameters(config_type: type[T], values: Mapping[str, Any], *, prefix: str = "", **overrides: Any) -> T:
    """Build ``config_type`` from parameter values named ``prefix + field``; its own
    validation errors are re-raised under the parameter's full name."""
    arguments = {
        dataclass_field.name: values[prefix + dataclass_field.name]
        for dataclass_field in dataclasses.fields(config_type)  # type: ignore[arg-type]
        if prefix + dataclass_field.name in values
    }
    arguments.update(overrides)
    try:
        return config_type(**arguments)
    except ConfigError as error:
        if prefix and not error.parameter.startswith(prefix):
            raise ConfigError(prefix + error.parameter, error.problem, error.fix) from error
        raise
