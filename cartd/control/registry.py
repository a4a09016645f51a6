"""The methods a daemon offers over the control socket, and the checks on their parameters.

A method is a name, an async handler and its parameters, registered in one line:

    methods.register("break", self.break_in, target=Param(str, required=True))

The server checks a request's parameters against the declaration before calling the handler,
so handlers receive only known names with values of the declared JSON type (and defaults filled
in), and clients get `invalid_params` errors that say exactly what to change.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cartd.control.protocol import ControlError, ErrorCode

Params = Mapping[str, Any]
Handler = Callable[[Params], Awaitable[dict[str, Any]]]

_KIND_NAMES: dict[type[Any], str] = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "an object",
}


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter: its JSON type (bool, int, float, str, list or dict), whether a request
    must give it, the value a handler sees when it is left out, and bounds for numbers."""

    kind: type[Any]
    required: bool = False
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KIND_NAMES:
            raise TypeError(f"a parameter is one of {sorted(k.__name__ for k in _KIND_NAMES)}")

    def describe(self) -> str:
        text = _KIND_NAMES[self.kind]
        if self.minimum is not None and self.maximum is not None:
            text += f" from {self.minimum:g} to {self.maximum:g}"
        elif self.minimum is not None:
            text += f" >= {self.minimum:g}"
        elif self.maximum is not None:
            text += f" <= {self.maximum:g}"
        return text

    def accepts(self, value: object) -> bool:
        # JSON true/false arrive as bool, which Python counts as an int.
        if isinstance(value, bool) or self.kind is bool:
            return isinstance(value, bool) and self.kind is bool
        if self.kind is float:
            if not isinstance(value, int | float):
                return False
        elif not isinstance(value, self.kind):
            return False
        if isinstance(value, int | float):
            above = self.minimum is None or value >= self.minimum
            below = self.maximum is None or value <= self.maximum
            return above and below
        return True


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    handler: Handler
    params: Mapping[str, Param] = field(default_factory=dict)

    def bind(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The handler's parameters: `given` checked, defaults added. Raises ControlError
        (invalid_params) naming the parameter and what it should be."""
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            raise ControlError(
                ErrorCode.INVALID_PARAMS,
                f"{self.name!r} has no parameter {unknown[0]!r}; {self.signature()}",
            )
        bound: dict[str, Any] = {}
        for name, param in self.params.items():
            if name not in given:
                if param.required:
                    raise ControlError(
                        ErrorCode.INVALID_PARAMS,
                        f"{self.name!r} needs {name!r} ({param.describe()}); {self.signature()}",
                    )
                bound[name] = param.default
            elif param.accepts(given[name]):
                bound[name] = given[name]
            else:
                raise ControlError(
                    ErrorCode.INVALID_PARAMS,
                    f"{self.name!r} parameter {name!r} is {param.describe()}, "
                    f"not {_shorten(json.dumps(given[name]))}",
                )
        return bound

    def signature(self) -> str:
        if not self.params:
            return "it takes no parameters"
        parts = [
            f"{name} ({param.describe()}{', required' if param.required else ''})"
            for name, param in self.params.items()
        ]
        return "its parameters: " + ", ".join(parts)


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class MethodRegistry:
    """The methods a daemon offers. The server adds its own built-ins (hello, subscribe,
    unsubscribe); a registry may not reuse their names."""

    def __init__(self) -> None:
        self._methods: dict[str, Method] = {}

    def register(self, name: str, handler: Handler, **params: Param) -> None:
        if name in self._methods:
            raise ValueError(f"control method {name!r} is registered twice")
        self._methods[name] = Method(name, handler, params)

    def get(self, name: str) -> Method | None:
        return self._methods.get(name)

    def names(self) -> list[str]:
        return sorted(self._methods)
