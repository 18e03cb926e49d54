"""Settings described once, where they are defined.

A settings record (:class:`~inceptionv4.train.config.TrainConfig`,
:class:`~inceptionv4.serve.settings.ServeSettings`,
:class:`~inceptionv4.engines.options.SessionOptions`, ...) is a dataclass whose fields are made by
:func:`setting`: each carries its default, its help line, and the values it takes (a numeric
:class:`Range`, or ``choices``). The records check themselves with :func:`check_fields`, and the
command line builds its flags from the same fields (``inceptionv4.cli.args``), so a default, a
range or a help line is written in one place only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Range:
    """The values a numeric setting takes: ``check(value)`` holds for a finite number of the
    right kind (an int where ``integer``); ``rule`` is how an error states it."""

    check: Callable[[float], bool]
    rule: str
    integer: bool = False
    unset_ok: bool = False

    def or_unset(self) -> Range:
        """The same range for a setting that may also stay None."""
        return dataclasses.replace(self, rule=f"{self.rule}, or unset", unset_ok=True)


def between(low: float, high: float, *, integer: bool = False) -> Range:
    """``low <= value <= high``."""
    kind = "an integer" if integer else "a number"
    return Range(lambda v: low <= v <= high, f"{kind} of {_shown(low)}-{_shown(high)}", integer=integer)


def _shown(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def above(low: float, high: float = math.inf) -> Range:
    """``low < value <= high``: a duration, a size."""
    rule = f"> {low:g}" + (f" and <= {high:g}" if high < math.inf else "")
    return Range(lambda v: low < v <= high, rule)


COUNT = Range(lambda v: v >= 1, "an integer >= 1", integer=True)
COUNT_OR_ZERO = Range(lambda v: v >= 0, "an integer >= 0", integer=True)
INTEGER = Range(lambda v: True, "an integer", integer=True)
POSITIVE = Range(lambda v: v > 0, "> 0")
NON_NEGATIVE = Range(lambda v: v >= 0, ">= 0")
FRACTION = Range(lambda v: 0 <= v < 1, "in [0, 1)")
PROBABILITY = Range(lambda v: 0 <= v <= 1, "a probability in [0, 1]")
SHARE = Range(lambda v: 0 < v <= 1, "in (0, 1]")


@dataclass(frozen=True)
class Unit:
    """A flag that states a setting in a larger unit than the setting holds: ``--max-body-mb 32``
    for ``max_body_bytes = 32 * 2**20``."""

    factor: int
    suffix: str  # the flag's ending and metavar: "mb" -> --max-body-mb MB


def setting(
    default: object,
    help: str,
    *,
    range: Range | None = None,
    choices: Sequence[object] | None = None,
    flag: str | None = None,
    metavar: str | None = None,
    unit: Unit | None = None,
    check: Callable[[object], str | None] | None = None,
) -> object:
    """One setting of a settings record, described once: its default, its help line (what
    ``--help`` shows), and the values it takes (a :class:`Range` for a number, ``choices``
    otherwise). ``flag`` names its command-line flag when ``--name-with-dashes`` does not fit;
    ``unit`` states it on the command line in a larger unit; ``check(value)`` returns why a value
    that is neither a number nor a choice is refused (None: taken)."""
    metadata = {"help": help, "range": range, "choices": tuple(choices) if choices is not None else None,
                "flag": flag, "metavar": metavar, "unit": unit, "check": check}  # fmt: skip
    return field(default=default, metadata=metadata)


def check_value(name: str, value: object, *, range: Range | None = None, choices: Sequence | None = None,
                check: Callable[[object], str | None] | None = None) -> None:  # fmt: skip
    """ValueError, naming the setting and its rule, if ``value`` is outside ``range`` (finite, of
    its kind) or ``choices``, or ``check`` refuses it."""
    why = check(value) if check is not None else None
    if why:
        raise ValueError(f"{name} {why}")
    if choices is not None and value not in choices and value is not None:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")
    if range is None or (value is None and range.unset_ok):
        return
    number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not number or (range.integer and not isinstance(value, int)) or not range.check(value):
        raise ValueError(f"{name} must be {range.rule}; got {value!r}")


def check_fields(record: object, names: Sequence[str] | None = None) -> None:
    """Check the fields of a settings record (``names``, or all) against their ranges and choices."""
    for f in dataclasses.fields(record):
        if names is None or f.name in names:
            check_value(f.name, getattr(record, f.name), range=f.metadata.get("range"),
                        choices=f.metadata.get("choices"), check=f.metadata.get("check"))  # fmt: skip


def described(record: type) -> list[dataclasses.Field]:
    """The fields of a settings record that :func:`setting` made (those with a help line)."""
    return [f for f in dataclasses.fields(record) if "help" in f.metadata]
