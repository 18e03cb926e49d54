"""The ``inceptionv4`` command: a thin layer over functions a user can import.

Each group of commands is a module (:mod:`.models`, :mod:`.train`, :mod:`.infer`, :mod:`.serve`)
whose ``register(sub)`` adds its commands, each command's flags beside its handler; the flags
of a settings record are generated from it (:mod:`.args`). Here: the parser, the dispatch, and
the one mapping of errors to a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..version import __version__
from . import infer, models, serve, train
from .args import Help, printable  # noqa: F401 (printable: read from here too)

DESCRIPTION = (
    "Inception-v4, Inception-ResNet-v1 and Inception-ResNet-v2 (Szegedy et al. 2016): build, convert, train, "
    "evaluate, predict, serve, quantize, export and benchmark them. `inceptionv4 COMMAND --help` for each."
)

#: the groups of commands, in the order `--help` lists them
GROUPS = (models, train, infer, serve)


def build_parser() -> argparse.ArgumentParser:
    """The ``inceptionv4`` command's parser; each subcommand sets ``func``, which takes the
    parsed arguments and returns the exit status."""
    parser = argparse.ArgumentParser(prog="inceptionv4", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"inceptionv4 {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    for command in sub.choices.values():
        command.formatter_class = Help
    parser.commands = sub.choices  # for main's "did you mean"
    return parser


#: a flag one command takes under another name: train loads weights with --pretrained, the others
#: with --weights
_OTHER_NAMES = {"--weights": "--pretrained", "--pretrained": "--weights"}


def unknown_flags_hint(extras: list[str], parser: argparse.ArgumentParser) -> str:
    """The usage error for arguments ``parser`` does not take: argparse's own words, and for each
    unknown flag the name this command gives it, or the closest flag it has ("did you mean")."""
    import difflib

    known = [o for action in parser._actions for o in action.option_strings]
    hints = []
    for arg in extras:
        flag = arg.split("=", 1)[0]
        if not flag.startswith("--"):
            continue
        other = _OTHER_NAMES.get(flag)
        if other in known:
            hints.append(f"{flag}: this command calls it {other}")
        elif close := difflib.get_close_matches(flag, known, n=1, cutoff=0.75):
            hints.append(f"{flag}: did you mean {close[0]}?")
    return f"unrecognized arguments: {' '.join(extras)}" + (f" ({'; '.join(hints)})" if hints else "")


def main(argv: list[str] | None = None) -> int:
    """Run one command; 0 on success, 2 with one ``inceptionv4 CMD: error: ...`` line for bad input."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:  # said by the command's own parser, with what it calls the flag
        parser.commands[args.command].error(unknown_flags_hint(extras, parser.commands[args.command]))
    try:
        return args.func(args)
    except BrokenPipeError:  # `inceptionv4 ... | head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0
    except OSError as err:  # a path that cannot be read or written: a full disk, no permission, ...
        where = f": {err.filename}" if err.filename and str(err.filename) not in str(err.strerror or "") else ""
        text = f"{err.strerror}{where}" if err.strerror else str(err)
        print(f"inceptionv4 {args.command}: error: {text}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, ImportError, RuntimeError) as err:
        print(f"inceptionv4 {args.command}: error: {err}", file=sys.stderr)
        return 2
