"""Command-line options made from a settings dataclass, so a script's flags cannot drift from its settings."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

from jsonargparse import ArgumentParser, Namespace

Settings = TypeVar("Settings")


def add_settings_options(parser: ArgumentParser, settings_class: type) -> None:
    """One ``--field-name`` option per field of ``settings_class``, typed and defaulted as the field."""
    defaults = settings_class()
    for item in fields(settings_class):
        default = getattr(defaults, item.name)
        option = "--" + item.name.replace("_", "-")
        parser.add_argument(option, type=type(default), default=default, help="(default: %(default)s)")


def settings_from(args: Namespace, settings_class: type[Settings]) -> Settings:
    """``settings_class`` built from the options :func:`add_settings_options` added."""
    values: dict[str, Any] = {item.name: getattr(args, item.name) for item in fields(settings_class)}
    return settings_class(**values)
