"""The config's error type and its did-you-mean hint."""

from __future__ import annotations

import difflib

__all__ = ["ConfigError", "did_you_mean"]


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


def did_you_mean(key: str, options: list[str]) -> str:
    """`` Did you mean 'x'?`` for the closest of ``options``, else the list of them."""
    close = difflib.get_close_matches(key, options, n=1)
    return f" Did you mean '{close[0]}'?" if close else f" Known keys: {', '.join(sorted(options))}."
