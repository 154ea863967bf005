"""One flag style everywhere: `--max_lines` (TRL's) is what help and docs show, and `--max-lines` works too.
`underscored(argv)` rewrites the names; `FlagParser` is argparse that reads a flag in either spelling; `helped`
declares a config field with the text its --help shows.

    from rookworld_trl.common.flags import FlagParser
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys

from rookworld_trl.common.errors import did_you_mean


def helped(default, help: str, **metadata):
    """A dataclass field of `default` whose --flag's help is `help` (`metadata`: more for the parser, e.g. choices);
    a list default is copied for each instance."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=default.copy, metadata={"help": help, **metadata})
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def flag_values(argv: list[str]) -> dict[str, list[str]]:
    """{name: [values]} of `--name v1 v2` and `--name=v` in argv (names with underscores).

    >>> flag_values(["--max_steps", "5", "--reward_funcs", "a", "b", "--bf16=false"])
    {'max_steps': ['5'], 'reward_funcs': ['a', 'b'], 'bf16': ['false']}
    """
    out, name = {}, None
    for arg in argv:
        if arg.startswith("--"):
            name, _, value = arg[2:].partition("=")
            name = name.replace("-", "_")
            out[name] = [value] if value else []
        elif name is not None:
            out[name].append(arg)
    return out


def underscored(argv: list[str]) -> list[str]:
    """Every long flag's name with underscores (`--max-lines=5` -> `--max_lines=5`); values and anything after a
    bare `--` stay as they are.

    >>> underscored(["--max-lines", "5", "--out=a-b", "a-b", "-h", "--", "--x-y"])
    ['--max_lines', '5', '--out=a-b', 'a-b', '-h', '--', '--x-y']
    """
    out = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + argv[i:]
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            arg = "--" + name[2:].replace("-", "_") + eq + value
        out.append(arg)
    return out


class FlagParser(argparse.ArgumentParser):
    """argparse taking `--a_b` and `--a-b` alike (define flags with underscores: help shows them), its errors
    one line: the problem, a "did you mean" for a misspelt flag or subcommand, the usage when it is short."""

    def parse_args(self, args=None, namespace=None):
        args, extras = self.parse_known_args(args, namespace)
        if extras:
            subcommands = (a for a in self._actions if isinstance(a, argparse._SubParsersAction))
            parser = next((a.choices.get(getattr(args, a.dest, None)) for a in subcommands), None) or self
            flag = next((a for a in extras if a.startswith("-")), None)
            if flag is None:
                parser.error(f"unexpected argument {extras[0]!r}")
            flags = [s for action in parser._actions for s in action.option_strings if s.startswith("--")]
            parser.error(f"unknown flag {flag.split('=')[0]}{did_you_mean(flag, flags)}")
        return args

    def error(self, message: str):
        choice = re.match(r"argument (\S+): invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:  # a subcommand (or a choices flag) misspelt
            options = [c.strip("'") for c in choice[3].split(", ")]
            prefix = "" if choice[1].isidentifier() else "--"
            message = (f"unknown {choice[1] if prefix else 'command'} {choice[2]!r}"
                       f"{did_you_mean(choice[2], options, prefix='')}; choose from {', '.join(options)}")  # fmt: skip
        usage = " ".join(self.format_usage().split())
        hint = f"usage: {usage.removeprefix('usage: ')}" if len(usage) <= 100 else f"see `{self.prog} --help`"
        self.exit(2, f"{self.prog}: error: {message}; {hint}\n")

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        cut = args.index("--") if "--" in args else len(args)
        return super().parse_known_args([self._known(a) for a in args[:cut]] + args[cut:], namespace)

    def _known(self, arg: str) -> str:
        name, eq, value = arg.partition("=")
        if not arg.startswith("--") or name in self._option_string_actions:
            return arg
        for other in ("--" + name[2:].replace("-", "_"), "--" + name[2:].replace("_", "-")):
            if other in self._option_string_actions:
                return other + eq + value
        return arg
