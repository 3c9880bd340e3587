"""The defaults a class's constructor gives its options, read as LightningCLI reads them.

One default per field: a config that leaves a key out runs with the constructor's default, so whatever else
needs the value of a key the config does not set (the planner, the check that configs restate no default)
reads it here instead of keeping a copy.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import typing
from typing import Any

NO_DEFAULT = inspect.Parameter.empty
"""The default of an option that has none (a required argument)."""


def import_class(class_path: str) -> type:
    """The class a config's ``class_path`` names (``datamodules.InstructionDataModule``)."""
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(f"class_path {class_path!r} names no importable class ({error})") from None


def options(cls: type) -> dict[str, tuple[Any, Any]]:
    """``{name: (annotation, default)}`` of what ``cls`` accepts (``NO_DEFAULT`` where there is none).

    A dataclass: its fields (a ``default_factory`` called). A class: its ``__init__``'s parameters, and where
    it takes ``**kwargs``, its base class's too (as ``InstructionDataModule`` passes the batching options on to
    ``TokenizedDataModule``); the nearest class's default wins.
    """
    if dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls)
        found = {}
        for field in dataclasses.fields(cls):
            default = field.default
            if field.default_factory is not dataclasses.MISSING:
                default = field.default_factory()
            found[field.name] = (hints.get(field.name), NO_DEFAULT if default is dataclasses.MISSING else default)
        return found
    found: dict[str, tuple[Any, Any]] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        hints = typing.get_type_hints(klass.__init__)
        parameters = inspect.signature(klass.__init__).parameters
        for name, parameter in parameters.items():
            if name != "self" and parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
                found.setdefault(name, (hints.get(name), parameter.default))
        if not any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters.values()):
            break
    return found


def defaults(cls: type) -> dict[str, Any]:
    """``{name: default}`` of the options of ``cls`` that have one (tuples as lists, as YAML reads them)."""
    return {
        name: list(default) if isinstance(default, tuple) else default
        for name, (_, default) in options(cls).items()
        if default is not NO_DEFAULT
    }


def settings_class(annotation: Any) -> type | None:
    """The settings dataclass an option takes (``LoraSettings | None`` -> ``LoraSettings``), if any."""
    for candidate in typing.get_args(annotation) or (annotation,):
        if dataclasses.is_dataclass(candidate):
            return candidate
    return None
