"""Parse errors of the training CLI as one line: the key that is wrong, and what it could have been.

jsonargparse reports a bad nested key by walking every branch of every ``Union`` it tried (``LightningModule |
None``, ``LoraSettings | None``), after the whole usage: 70 lines for one typo, the useful one in the middle. This
module keeps that line, names the key by its full path, and suggests the closest accepted option.
"""

from __future__ import annotations

import difflib
import inspect
import pydoc
import re
import sys
from dataclasses import fields, is_dataclass

from jsonargparse._common import debug_mode_active
from lightning.pytorch.cli import LightningArgumentParser

PARSER_KEY = re.compile(r'^\s*Parser key "([^"]+)":')
CLASS_PATH = re.compile(r"^\s*- Problem with given class_path '([^']+)':")
NOT_ACCEPTED = re.compile(r"^\s*Option '([^']+)' is not accepted")
UNRECOGNIZED = re.compile(r"^\s*Unrecognized arguments: (.+)$")


def accepted_options(class_path: str) -> list[str]:
    """The init arguments of the class at ``class_path`` (a dataclass's fields, else its ``__init__``'s
    parameters and, through ``**kwargs``, its bases'), for the suggestion; empty when it cannot be imported."""
    found = pydoc.locate(class_path)
    if not isinstance(found, type):
        return []
    if is_dataclass(found):
        return [item.name for item in fields(found) if item.init]
    names: list[str] = []
    for cls in found.__mro__:
        if "__init__" not in vars(cls) or cls is object:
            continue
        parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
        names += [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in names]
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break  # what the bases take beyond this is not passed through
    return names


def short_parse_error(message: str) -> str:
    """One line for jsonargparse's ``message``: ``model.init_args.lora: no option 'rr' (did you mean 'r'? accepted:
    r, alpha, ...)``; an error of another shape keeps its first line and its innermost reason."""
    lines = message.splitlines()
    path: list[str] = []
    class_path, under_init_args = None, False
    for line in lines:
        if match := PARSER_KEY.match(line):
            # a subclass-mode class (``class_path`` + ``init_args``) takes its options under init_args
            path += ["init_args", match.group(1)] if under_init_args else [match.group(1)]
            under_init_args = False
        elif match := CLASS_PATH.match(line):
            class_path = match.group(1)
            under_init_args = not is_dataclass(pydoc.locate(class_path))
        elif match := NOT_ACCEPTED.match(line):
            option = match.group(1)
            where = ".".join([*path, "init_args"] if under_init_args else path) or "the config"
            accepted = accepted_options(class_path) if class_path else []
            hint = ""
            if accepted:
                close = difflib.get_close_matches(option, accepted, n=1)
                hint = (f" did you mean '{close[0]}'?" if close else "") + f" accepted: {', '.join(accepted)}"
            return f"{where}: no option '{option}' (in {class_path or 'this section'});{hint}".rstrip(";")
        elif match := UNRECOGNIZED.match(line):
            return f"unrecognized arguments: {match.group(1)}"
    reasons = [line.strip() for line in lines[1:] if line.strip() and not line.strip().startswith(("Given value", "-"))]
    first = lines[0].strip() if lines else message
    return first if not reasons else f"{first} {reasons[-1]}"


class ShortErrorParser(LightningArgumentParser):
    """LightningCLI's parser, whose errors are one ``error:`` line and where to find the options, not the usage,
    and which takes no abbreviated option: argparse's default would read ``--trainer.max_step 3`` as
    ``max_steps`` (it did, and trained)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error or debug_mode_active():
            return super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        sys.stderr.write(f"error: {short_parse_error(message)}\n")
        sys.stderr.write(f"(every option: {parser.prog.replace(' [options]', '')} --help)\n")
        self.exit(2)
