"""Every command line of the README and docs/ as written: each `python -m colorization.<command>` line composes its
config (every key and group exists, every value parses), each `make` target exists, each script is there."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from helpers.config import REPO, compose

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CONFIG = {"study": "study"}  # the config of each command: conf/<command>.yaml


def shell_lines(path: Path) -> list[str]:
    """The commands of the ```bash blocks, continuation lines joined."""
    lines, block, joined = [], False, ""
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            block = line.strip() == "```bash"
            continue
        if not block:
            continue
        joined += line.rstrip("\\").rstrip() + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            lines.append(joined.strip())
            joined = ""
    return [line for line in lines if line and not line.startswith("#")]


def commands() -> list[tuple[str, str]]:
    return [(f"{path.relative_to(REPO)}: {line}", line) for path in DOCS for line in shell_lines(path)]


def first_of_sweep(override: str) -> str:
    """``seed=0,1,2`` -> ``seed=0`` (a multirun's first job); lists and dicts in brackets stay whole."""
    key, _, value = override.partition("=")
    return f"{key}={value.split(',')[0]}" if "," in value and not value.startswith(("[", "{")) else override


def test_the_docs_have_commands():
    found = commands()
    assert len(found) > 40 and any("colorization.train" in line for _, line in found)


@pytest.mark.parametrize(("where", "line"), commands(), ids=[w[:90] for w, _ in commands()])
def test_each_command_line_is_valid(where, line, tmp_path):
    words = shlex.split(line, comments=True)
    env = [w for w in words if re.fullmatch(r"[A-Z_]+=.*", w)]  # VAR=value before the command
    words = words[len(env) :]
    if words[0] == "make":
        targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M))
        assert set(w for w in words[1:] if "=" not in w) <= targets, where
        return
    if words[0] in ("bash", "python") and words[1:2] and not words[1].startswith("-"):
        assert (REPO / words[1]).is_file(), where  # a script of the repository
        return
    at = next((i for i in range(len(words) - 1) if words[i] == "-m" and words[i + 1].startswith("colorization.")), None)
    if at is None:
        return  # another tool's command (pip, git, ...)
    command = words[at + 1].removeprefix("colorization.")  # python -m, torchrun ... -m, srun ... python -m
    args = [w for w in words[at + 2 :] if w not in ("-m", "--multirun", "--help")]
    if command == "study":
        args = [f"action={args[0]}", *args[1:]]
    overrides = [first_of_sweep(re.sub(r"<\w+>", "x", a)) for a in args if "=" in a]
    assert len(overrides) == len(args), f"{where}: a word that is not key=value: {args}"
    compose(overrides, tmp_path, config_name=CONFIG.get(command, command))
