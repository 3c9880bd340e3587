"""The README's commands run as written: every file they name exists, every make target is in the Makefile, and
the cheap ones (a training config printed, a run's paths) run, in one process (tests/cli_batch.py)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
RUNNERS = (".venv/bin/python", "python", "bash", "make")


def readme_commands() -> list[str]:
    """Each command of the README: the lines of its code blocks and its inline code that start with a runner,
    comments cut off."""
    text = README.read_text()
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.S | re.M)
    lines = [line for block in blocks for line in block.splitlines()]
    lines += re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M))
    commands = []
    for line in lines:
        command = line.split("  #")[0].split(" # ")[0].strip()
        if command.split(" ", 1)[0] in RUNNERS:
            commands.append(command)
    return list(dict.fromkeys(commands))


COMMANDS = readme_commands()


def test_the_readme_has_its_two_set_up_commands_and_the_stages():
    assert {"make demo", "make test"} <= set(COMMANDS)
    assert sum(command.startswith(".venv/bin/python train.py fit") for command in COMMANDS) >= 3


@pytest.mark.parametrize("command", COMMANDS)
def test_every_file_and_make_target_a_readme_command_names_exists(command):
    words = shlex.split(command)
    if words[0] == "make":
        targets = set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), flags=re.M))
        assert set(words[1:]) <= targets, f"{command}: no such make target"
        return
    for word in (part for argument in words[1:] for part in argument.split("+")):  # the planner's A.yaml+B.yaml
        if re.fullmatch(r"(configs|scripts|benchmarks|planner|study)/[\w./-]+\.(py|yaml|sh)|train\.py", word):
            assert (REPO / word).is_file(), f"{command}: {word} does not exist"


def test_the_training_commands_parse_and_the_cheap_ones_run_as_written(cli_batch):
    """``--print_config`` and ``--print_paths`` load no model: those run exactly as the README writes them; every
    other ``train.py`` command is parsed with ``--print_config`` added, so a README option that does not exist
    fails here."""
    training = [c for c in COMMANDS if c.startswith((".venv/bin/python train.py", "python train.py"))]
    assert sum("--print_" in c for c in training) >= 2
    commands = {
        command: [REPO / "train.py", *shlex.split(command)[2:], *([] if "--print_" in command else ["--print_config"])]
        for command in training
    }
    for command, result in cli_batch(commands, REPO).items():
        assert result.returncode == 0, f"{command}:\n{result.stderr[-2000:]}"
        assert result.stdout.strip(), command
