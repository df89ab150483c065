"""Local paths against hub names: the error a model, checkpoint or tokenizer field gets when it did not load.

videovl never downloads. A value that did not load from local files is either a local path that is wrong
(``/models/clip-vit-base-patch16`` before the download) or a hub name that was never fetched
(``openai/clip-vit-base-patch16``); the two mistakes have different fixes, so they get different messages.
"""

from __future__ import annotations

from pathlib import Path

from videovl.config.errors import ConfigError
from videovl.config.loading import resolve_path

__all__ = ["looks_like_path", "not_loaded_error"]

# Suffixes of weight files: a name ending in one is a file, never a hub repository.
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def looks_like_path(spec: str) -> bool:
    """Whether ``spec`` can only mean a local file or folder. A hub name is ``name`` or ``owner/name``; a
    value that is absolute, starts with ``~``, ``.`` or ``pkg:``, ends in a weights suffix, holds more than
    one ``/``, or whose first part exists here (``runs/x`` beside a ``runs`` folder) is a path."""
    if spec.startswith(("/", "~", ".", "pkg:")) or spec.endswith(WEIGHT_SUFFIXES) or spec.count("/") > 1:
        return True
    head, sep, _ = spec.partition("/")
    return bool(sep) and Path(head).exists()


def _nearest_existing(path: Path) -> Path | None:
    for parent in path.absolute().parents:
        if parent.exists():
            return parent
    return None


def not_loaded_error(field: str, spec: str, reason: str = "", what: str = "weights") -> ConfigError:
    """The error for ``field: spec`` that did not load from local files (``reason``: the library's own
    message). A path that does not exist says so and names the nearest folder that does; one that exists
    did not load (``reason`` says why); anything else is a hub name to fetch once."""
    detail = f" ({reason})" if reason else ""
    if looks_like_path(spec):
        path = Path(resolve_path(spec)).expanduser()
        if not path.exists():
            parent = _nearest_existing(path)
            where = f"; the nearest folder that exists is {parent}" if parent is not None else ""
            return ConfigError(
                f"{field} is '{spec}': no such local file or folder{where}. Check the path, or download the "
                f"{what} there first"
            )
        return ConfigError(f"{field} is '{spec}', which exists but does not load{detail}")
    return ConfigError(
        f"{field} is '{spec}', which is not a local file or folder (nor in the Hugging Face cache). videovl "
        f"never downloads {what}: fetch them once (`hf download {spec} --local-dir DIR`) and pass the local "
        f"folder{detail}"
    )
