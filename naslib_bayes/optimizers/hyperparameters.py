"""Optimizers' hyper-parameters: names checked against the defaults, values against their types.

Values arrive from ``--opt KEY=VALUE``, NASLib YAML files and Python calls, so a typo or a
string where a number belongs must be reported by name before a run starts, not surface as a
``ValueError`` deep inside it.
"""

from __future__ import annotations

from typing import Any

from naslib_bayes.errors import UserError


def merge_hyperparameters(owner: str, defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``given``; an unknown name or a value of the wrong type is a UserError.

    A value is checked against the type of its default (bool, int, float, str); a default of
    None accepts anything. An int default accepts an integral float, a float default any number.
    """
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        known = ", ".join(sorted(defaults)) or "none"
        raise UserError(f"{owner}: unknown hyper-parameter {unknown[0]!r} (known: {known})")
    return {**defaults, **{name: _typed(owner, name, value, defaults[name]) for name, value in given.items()}}


def _typed(owner: str, name: str, value: Any, default: Any) -> Any:
    if default is None or value is None:
        return value
    kind = type(default)
    if kind is bool:
        text = str(value).lower()
        if isinstance(value, bool) or text in ("true", "false"):
            return value if isinstance(value, bool) else text == "true"
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise UserError(f"{owner}: hyper-parameter {name}={value!r}: expected {kind.__name__} (default {default!r})")
