"""What the benchmark parsers share: the report of what a parser found, and one walk over a media folder."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

__all__ = ["AnnotationReport", "index_files"]


@dataclass
class AnnotationReport:
    """What a benchmark loader found: counts, repaired or skipped entries, media files not found."""

    source: str
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def summary(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts.items())
        return f"{self.source}: {counts}; {len(self.problems)} problems, {len(self.missing)} missing files"


def index_files(root: str | os.PathLike | None) -> dict[str, str]:
    """File name -> path of every file under ``root`` (recursive; the first of duplicate names wins).

    One directory walk instead of one ``stat`` per annotation row; an absent root gives an empty index.
    """
    index: dict[str, str] = {}
    if root is None or not os.path.isdir(root):
        return index
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            index.setdefault(name, os.path.join(folder, name))
    return index
