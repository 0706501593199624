"""A probe's JSON answer read once, at the boundary, into typed objects (frozen dataclasses),
so rules read attributes and a field renamed in a probe is an error that names the node, the
probe and the field, never a rule that silently stops judging.

`read(Type, data)` checks `data` against `Type`'s fields and their annotations: nested
dataclasses, `list[X]`, `dict[str, X]`, `X | None`, `Any`, and str, int, float (an int is
a float too), bool. Fields with a default may be absent; keys the type does not name are
ignored (a newer probe may say more).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from functools import lru_cache
from typing import Any, TypeVar, Union

from clusterprep.errors import PROBE_FAILED, NodeError

T = TypeVar("T")


class Misfit(Exception):
    """An answer that does not fit its type: where (`gpus[1].memory`) and how."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where or 'the answer'}: {problem}")
        self.where = where
        self.problem = problem

    def error(self, node: str, probe: str) -> NodeError:
        """The node's error for it: a probe answered in a shape this clusterprep cannot read
        (a probe and a head of different versions, or a bug)."""
        return NodeError(PROBE_FAILED, f"{node}: {probe}: {self}")


def read(kind: type[T], data: object, where: str = "") -> T:
    """`data` as a `kind`. Raises Misfit naming the first field that does not fit."""
    return _read(kind, data, where)


def _read(kind: Any, data: object, where: str) -> Any:
    if kind is Any:
        return data
    if dataclasses.is_dataclass(kind):
        return _read_dataclass(kind, data, where)
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        options = typing.get_args(kind)
        if data is None and type(None) in options:
            return None
        misfits = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _read(option, data, where)
            except Misfit as misfit:
                misfits.append(misfit)
        raise misfits[0]
    if origin is list:
        (item,) = typing.get_args(kind)
        if not isinstance(data, list):
            raise Misfit(where, f"expected a list, got {_shown(data)}")
        return [_read(item, value, f"{where}[{i}]") for i, value in enumerate(data)]
    if origin is dict:
        _, value_kind = typing.get_args(kind)
        if not isinstance(data, dict):
            raise Misfit(where, f"expected an object, got {_shown(data)}")
        return {key: _read(value_kind, value, f"{where}[{key!r}]") for key, value in data.items()}
    if kind is float:
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return float(data)
        raise Misfit(where, f"expected a number, got {_shown(data)}")
    if kind is int:
        if isinstance(data, int) and not isinstance(data, bool):
            return data
        raise Misfit(where, f"expected a whole number, got {_shown(data)}")
    if kind in (str, bool):
        if isinstance(data, kind):
            return data
        raise Misfit(where, f"expected {'text' if kind is str else 'true or false'}, "
                            f"got {_shown(data)}")
    raise TypeError(f"answers.read cannot read {kind!r}")  # a mistake in a type, not a node's


def _read_dataclass(kind: Any, data: object, where: str) -> Any:
    if not isinstance(data, dict):
        raise Misfit(where, f"expected an object, got {_shown(data)}")
    values = {}
    for field in dataclasses.fields(kind):
        key = field.metadata.get("key", field.name)
        inside = f"{where}.{key}" if where else key
        if key not in data:
            if field.default is dataclasses.MISSING \
                    and field.default_factory is dataclasses.MISSING:
                raise Misfit(inside, "missing")
            continue
        values[field.name] = _read(_hints(kind)[field.name], data[key], inside)
    return kind(**values)


@lru_cache(maxsize=None)
def _hints(kind: type) -> dict[str, Any]:
    return typing.get_type_hints(kind)


def _shown(data: object) -> str:
    text = repr(data)
    return text if len(text) <= 60 else text[:57] + "..."


def key(name: str, **field_options: Any) -> Any:
    """A field read from the answer's `name` where that is no Python name (`from`)."""
    return dataclasses.field(metadata={"key": name}, **field_options)
