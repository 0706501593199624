"""The commands clusterprep suggests (in errors, findings, advice, fixes, hand-over lines),
written so that copying one runs it on the same nodes, recipe and folders as the command that
printed it.

The CLI tells this module once per invocation which options it was given and which options
each command accepts (`remember`); the core builds every command it suggests with `command`,
which adds the options that decide what the suggested command acts on, quoted for a shell.
Used without the CLI (a library call, a test), `command` suggests the bare command.
"""

from __future__ import annotations

import argparse
import os
import shlex
from dataclasses import dataclass, field

# The options that decide what a command acts on, by argparse dest. The head's files among them
# are made absolute, so the suggestion runs the same from another folder; --shared-dir is
# absolute already and --python is a path on the nodes, so both are passed on as given.
_DECIDING = ("recipe", "nodes", "ssh_config", "shared_dir", "staging", "python", "slurm",
             "slurm_job")
_PATHS = ("recipe", "nodes", "ssh_config", "staging")


@dataclass
class _Invocation:
    given: dict[str, str | bool] = field(default_factory=dict)  # dest -> value
    # "weights stage" -> dest -> the option's strings, the one to write first ("-r", "--recipe")
    accepts: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)


_invocation = _Invocation()


def remember(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Note the deciding options this invocation was given and every command's flags for them."""
    global _invocation
    given: dict[str, str | bool] = {}
    for dest in _DECIDING:
        value = getattr(args, dest, None)
        if value in (None, False, ""):
            continue
        if dest in _PATHS and isinstance(value, str) and _is_path(dest, value):
            value = os.path.abspath(os.path.expanduser(value))
        given[dest] = value
    accepts: dict[str, dict[str, tuple[str, ...]]] = {}
    _learn(parser, (), accepts)
    _invocation = _Invocation(given, accepts)


def command(*words: str) -> str:
    """`clusterprep WORDS...` plus this invocation's deciding options that the suggested command
    takes and its words do not already give, every word quoted for a shell."""
    path = _command_path(words)
    flags = _invocation.accepts.get(path, {})
    present = {word.split("=", 1)[0] for word in words if word.startswith("-")}
    extra: list[str] = []
    for dest, value in _invocation.given.items():
        strings = flags.get(dest)
        if strings is None or present.intersection(strings):
            continue
        extra += [strings[0]] if value is True else [strings[0], str(value)]
    return shlex.join(["clusterprep", *words, *extra])


def _command_path(words: tuple[str, ...]) -> str:
    """The longest leading run of `words` that names a command ("weights stage")."""
    for n in range(len(words), 0, -1):
        path = " ".join(words[:n])
        if path in _invocation.accepts:
            return path
    return ""


def _learn(parser: argparse.ArgumentParser, path: tuple[str, ...],
           accepts: dict[str, dict[str, tuple[str, ...]]]) -> None:
    flags: dict[str, tuple[str, ...]] = {}
    for action in parser._actions:  # argparse keeps no public list of a parser's options
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                _learn(sub, (*path, name), accepts)
        elif action.dest in _DECIDING and action.option_strings:
            # the short form first: the suggestion reads as the user most likely typed it
            flags[action.dest] = tuple(sorted(action.option_strings,
                                              key=lambda s: s.startswith("--")))
    if path:
        accepts[" ".join(path)] = flags


def _is_path(dest: str, value: str) -> bool:
    if dest in ("recipe", "nodes"):
        return os.path.exists(os.path.expanduser(value))  # else a built-in name or a hostlist
    return True
