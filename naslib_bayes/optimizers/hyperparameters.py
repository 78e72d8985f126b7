"""Optimizers' hyper-parameters: names checked against the defaults, values against their types
and lower bounds.

Values arrive from ``--opt KEY=VALUE``, NASLib YAML files and Python calls, so a typo, a
string where a number belongs or a count of zero must be reported by name before a run starts,
not surface as a ``ValueError`` (or a silently meaningless run) deep inside it.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from typing import Any, Mapping

from naslib_bayes.errors import UserError


@dataclass(frozen=True)
class LowerBound:
    """The smallest value a numeric hyper-parameter may take (``strict``: the bound itself excluded)."""

    value: float
    strict: bool = False

    def admits(self, number: float) -> bool:
        # comparisons with NaN are False, so NaN is refused too
        return number > self.value if self.strict else number >= self.value

    def __str__(self) -> str:
        return f"{'>' if self.strict else '>='} {self.value:g}"


def at_least(value: float) -> LowerBound:
    return LowerBound(value)


def above(value: float) -> LowerBound:
    return LowerBound(value, strict=True)


#: A float in exponent notation without a dot (``3e-4``): YAML 1.1 readers (PyYAML, NASLib's config
#: files) hand it on as text, though every user means a number by it.
EXPONENT_FLOAT = re.compile(r"[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+")


def exponent_text_float(value: Any) -> float | None:
    """``value`` as a float when it is text in exponent notation (``"3e-4"``, ``"3_e-4"``), else None."""
    if isinstance(value, str) and EXPONENT_FLOAT.fullmatch(value.strip()):
        return float(value.replace("_", ""))
    return None


def _as_whole(value: Any) -> int | None:
    """``value`` as a Python int when it is a whole number (numpy's integers and whole floats
    too, never a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    if isinstance(value, numbers.Integral) or float(value).is_integer():
        return int(value)
    return None


def whole_number(name: str, value: Any) -> int:
    """``value`` as a Python int (numpy's integers and whole floats too); a UserError naming ``name`` otherwise."""
    whole = _as_whole(value)
    if whole is None:
        raise UserError(f"{name} must be a whole number, got {value!r}")
    return whole


#: Largest seed: torch's generators overflow on much larger ones (mid-run, after --out was made),
#: and it is the bound NASLib's config seed has (numpy's legacy seeding).
MAX_SEED = 2**32 - 1


def seed_number(value: Any) -> int:
    """``value`` as a Python int seed; a UserError naming it when it is not a whole number in
    [0, MAX_SEED] (numpy's error names no seed, and ``int(1.5)`` would run seed 1)."""
    whole = _as_whole(value)
    if whole is None or not 0 <= whole <= MAX_SEED:
        raise UserError(f"seed must be an integer from 0 to {MAX_SEED}, got {value!r}")
    return whole


def whole_numbers(config: Any, names: tuple[str, ...]) -> None:
    """Set each field ``names`` of ``config`` that is not None to :func:`whole_number` of it: numpy's
    integers (a sweep over ``np.arange``) become Python's, which torch's generators and JSON need."""
    for name in names:
        value = getattr(config, name)
        if value is not None:
            setattr(config, name, whole_number(name, value))


def merge_hyperparameters(owner: str, defaults: dict[str, Any], given: dict[str, Any],
                          lower_bounds: Mapping[str, LowerBound] | None = None) -> dict[str, Any]:
    """``defaults`` updated with ``given``; an unknown name, a value of the wrong type or one below
    its lower bound is a UserError naming ``owner``, the hyper-parameter and the value.

    A value is checked against the type of its default (bool, int, float, str), and a missing
    one (None) is refused unless the default is None; a default of None accepts anything. An
    int default accepts an integral float, a float default any number (and ``"3e-4"``, which
    YAML 1.1 reads as text); numpy's numbers count as numbers and are stored as Python's. A float value must be finite, whatever its default.
    ``lower_bounds`` maps names to their :class:`LowerBound` (names absent from ``defaults`` are
    ignored, so a base class may bound what only some subclasses accept).
    """
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        known = ", ".join(sorted(defaults)) or "none"
        raise UserError(f"{owner}: unknown hyper-parameter {unknown[0]!r} (known: {known})")
    typed = {name: _typed(owner, name, value, defaults[name]) for name, value in given.items()}
    for name, value in typed.items():
        _check_bound(owner, name, value, defaults[name], (lower_bounds or {}).get(name))
        _check_finite(owner, name, value, defaults[name])
    return {**defaults, **typed}


def require_choice(name: str, value: Any, choices) -> None:
    """A UserError unless ``value`` is one of ``choices`` (a setting that names a variant)."""
    if value not in choices:
        raise UserError(f"{name} {value!r}: expected one of {', '.join(map(str, choices))}")


def _check_finite(owner: str, name: str, value: Any, default: Any) -> None:
    """inf and nan (``--opt lr=.inf``) would run to the end, whose result.json JSON cannot hold."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{owner}: hyper-parameter {name}={value!r}: expected a finite number (default {default!r})")


def _check_bound(owner: str, name: str, value: Any, default: Any, bound: LowerBound | None) -> None:
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if bound is None or not is_number:
        return
    if not bound.admits(value):
        raise UserError(f"{owner}: hyper-parameter {name}={value!r}: expected a number {bound} (default {default!r})")


def _typed(owner: str, name: str, value: Any, default: Any) -> Any:
    if default is None:
        return value
    kind = type(default)
    if value is None:  # e.g. ``--opt steps=`` or ``steps=null``: the code below would meet None later
        raise UserError(f"{owner}: hyper-parameter {name} has no value: expected {kind.__name__} (default {default!r})")
    if kind is bool:
        text = str(value).lower()
        if isinstance(value, bool) or text in ("true", "false"):
            return value if isinstance(value, bool) else text == "true"
    elif kind is int:  # numpy's numbers too (np.int64, np.float32), returned as Python's
        whole = _as_whole(value)
        if whole is not None:
            return whole
    elif kind is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
        parsed = exponent_text_float(value)
        if parsed is not None:
            return parsed
    elif kind is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise UserError(f"{owner}: hyper-parameter {name}={value!r}: expected {kind.__name__} (default {default!r})")
