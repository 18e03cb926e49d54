"""What every command's parser shares: flags generated from settings records, checked number
types, the help formatter, and one line of terminal text per file name."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys

from ..settings import check_value, described


def number(kind: type, low: float | None = None, high: float | None = None, *, above: float | None = None):
    """An argparse type for a ``kind`` (int or float) flag that must be finite and within
    [``low``, ``high``] (or > ``above``), checked while parsing: ``--workers 100000`` is a usage
    error before any model loads."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if (low is not None and value < low) or (high is not None and value > high) or (above is not None and value <= above):
            rule = (f"> {above:g}" if above is not None else f">= {low:g}" if low is not None else "") + (
                f"{' and ' if low is not None or above is not None else ''}<= {high:g}" if high is not None else "")
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _kind(field: dataclasses.Field) -> str:
    """A field's kind from its annotation (a string under ``from __future__ import annotations``):
    bool, int, float or str."""
    text = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    return next((k for k in ("bool", "int", "float") if text.split("|")[0].strip() == k), "str")


def flag_of(field: dataclasses.Field) -> str:
    """The flag a setting is given by: its own ``flag``, else ``--name-with-dashes`` (a setting in
    bytes stated in a larger unit: ``max_body_bytes`` -> ``--max-body-mb``)."""
    if field.metadata.get("flag"):
        return field.metadata["flag"]
    unit = field.metadata.get("unit")
    name = field.name.removesuffix("_bytes") + "_" + unit.suffix if unit else field.name
    return "--" + name.replace("_", "-")


def _setting_type(field: dataclasses.Field, kind: type):
    """An argparse type for one numeric setting: its kind, then its unit and its rule, as the
    settings record states them."""
    unit, meta = field.metadata.get("unit"), field.metadata

    def parse(text: str):
        value = number(float if unit else kind)(text)
        if unit:
            value = round(value * unit.factor)
        try:
            check_value(field.name, value, range=meta.get("range"), choices=meta.get("choices"))
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return value

    parse.__name__ = kind.__name__
    return parse


def _text_type(field: dataclasses.Field):
    def parse(text: str) -> str:
        why = field.metadata["check"](text)
        if why:
            raise argparse.ArgumentTypeError(why)
        return text

    return parse


def add_settings(parser: argparse.ArgumentParser | argparse._ArgumentGroup, record: type, *,
                 defaults: dict | None = None, skip: tuple[str, ...] = ()) -> None:  # fmt: skip
    """A flag for each setting of ``record`` (a dataclass made with
    :func:`~inceptionv4.settings.setting`), from its own description: help, default, range,
    choices. A flag left out parses as None, so that :func:`given` passes only what was given and
    the record's default (or a config file's value) stands; ``defaults`` gives a command's own
    default for a setting instead."""
    defaults = defaults or {}
    for f in described(record):
        if f.name in skip:
            continue
        meta, kind = f.metadata, _kind(f)
        shown = defaults.get(f.name, f.default)
        unit = meta.get("unit")
        if unit and isinstance(shown, int):
            shown = f"{shown / unit.factor:g}"
        text = meta["help"] + (f" (default: {shown})" if shown is not None and kind != "bool" else "")
        common = {"dest": f.name, "default": defaults.get(f.name), "help": text}
        if kind == "bool":
            parser.add_argument(flag_of(f), action=argparse.BooleanOptionalAction, **common)
            continue
        if meta.get("choices") is not None:
            common["choices"] = meta["choices"]
        metavar = meta.get("metavar") or (unit.suffix.upper() if unit else None)
        if kind in ("int", "float"):
            parser.add_argument(flag_of(f), type=_setting_type(f, int if kind == "int" else float),
                                metavar=metavar or ("N" if kind == "int" else "X") if "choices" not in common else None,
                                **common)  # fmt: skip
        elif meta.get("check") is not None:
            parser.add_argument(flag_of(f), type=_text_type(f), metavar=metavar or f.name.upper(), **common)
        else:
            parser.add_argument(flag_of(f), metavar=None if "choices" in common else metavar or f.name.upper(),
                                **common)  # fmt: skip


def given(args: argparse.Namespace, record: type) -> dict:
    """The settings of ``record`` the command line gave (those not None), by field name."""
    return {f.name: getattr(args, f.name) for f in described(record) if getattr(args, f.name, None) is not None}


class Retired(argparse.Action):
    """A flag that was removed: using it is a usage error that says what to use instead."""

    def __init__(self, option_strings, dest, instead: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, help=argparse.SUPPRESS, **kwargs)
        self.instead = instead

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.error(f"{option_string} was retired: {self.instead}")


class Help(argparse.HelpFormatter):
    """Every option's help ends with its default (when it has one worth showing and does not say it
    already) and says when the option is required."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.help is argparse.SUPPRESS or not action.option_strings:
            return text
        if action.required:
            return text + " (required)"
        default = action.default
        if ("%(default)" not in text and "(default:" not in text and default not in (None, False, [], argparse.SUPPRESS)
                and action.nargs != 0):  # fmt: skip
            text += " (default: %(default)s)"
        return text


def printable(text: str) -> str:
    """``text`` safe for one terminal line: control characters (a newline, an ANSI escape) as
    Python escapes, and the bytes of a file name that were not UTF-8 (held as surrogates) as
    ``\\xNN``, so one name is one line and any stdout encoding can print it."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape", "backslashreplace").decode("ascii"))
    return "".join(out)


def say(text: str) -> None:
    """One line on stderr: what runs, what was skipped (stdout is for results)."""
    print(text, file=sys.stderr, flush=True)
