"""The config's error type and its did-you-mean hints."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

__all__ = ["ConfigError", "did_you_mean", "not_one_of"]


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


def did_you_mean(key: str, options: list[str]) -> str:
    """`` Did you mean 'x'?`` for the closest of ``options``, else the list of them."""
    close = difflib.get_close_matches(key, options, n=1)
    return f" Did you mean '{close[0]}'?" if close else f" Known keys: {', '.join(sorted(options))}."


def not_one_of(where: str, value: Any, options: Sequence[str]) -> ConfigError:
    """The error for a value outside its allowed words, e.g. ``stages.1.freeze[0] is 'vison'; expected one
    of ('visual', 'text', 'temporal', 'projections'); did you mean 'visual'?``"""
    # A lower bar than difflib's 0.6: the options are a handful of words, and a dropped letter in a short
    # one ('vison' for 'visual') falls just under it.
    close = difflib.get_close_matches(str(value), list(options), n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"{where} is {value!r}; expected one of {tuple(options)}{hint}")
