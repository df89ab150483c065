"""Evaluation sets: a generic manifest or a benchmark's annotations, with the media files found.

Each benchmark follows the protocol of its loader in :mod:`videovl.data`: MSR-VTT 1k-A test (1000 clips,
one caption each), ActivityNet Captions val_1 paragraph-to-video (4917 videos), Kinetics-400 validation
(400 classes). ``--annotations`` is the annotation file itself or the folder holding it under its usual
name. Clips whose file is absent (benchmark downloads are never complete) are left out and counted, so
the numbers are those of the clips present, and the report says how many that is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from videovl.data.annotations.activitynet import read_activitynet
from videovl.data.annotations.activitynet_qa import SPLITS as QA_SPLITS
from videovl.data.annotations.activitynet_qa import read_activitynet_qa
from videovl.data.annotations.kinetics import read_kinetics, read_label_map
from videovl.data.annotations.msrvtt import read_msrvtt_test
from videovl.data.annotations.msrvtt_qa import read_answer_list, read_msrvtt_qa
from videovl.data.annotations.report import AnnotationReport
from videovl.data.datasets import build_label_map
from videovl.data.sources import QASample, Sample, read_manifest

__all__ = [
    "BENCHMARKS",
    "EvalSet",
    "QASet",
    "load_benchmark",
    "load_manifest",
    "load_qa_benchmark",
    "load_qa_file",
    "read_classes",
    "resolve_classes",
]

# benchmark -> (annotation file inside a folder, tasks it supports)
BENCHMARKS = {
    "msrvtt": ("MSRVTT_JSFUSION_test.csv", ("retrieval", "caption")),
    "activitynet": ("val_1.json", ("retrieval", "caption")),
    "k400": ("val.csv", ("action",)),
    # question answering: ActivityNet-QA's folder of {split}_q.json / _a.json; a MSRVTT-QA-layout file
    "activitynet-qa": ("test_q.json", ("qa",)),
    "msrvtt-qa": ("test.json", ("qa",)),
}
# MSRVTT-QA-layout file names: LAVIS's, then VindLU's (split files, then the answer list)
_MSRVTT_QA_FILES = ("{split}.json", "msrvtt_qa_{split}.json")
_ANSWER_LISTS = ("answer_list.json", "msrvtt_qa_answer_list.json")
_K400_LABEL_MAPS = ("label_map_k400.txt", "kinetics_400_labels.csv")


@dataclass
class EvalSet:
    """Samples to evaluate, the class names of their label space (if the source defines one), and the
    samples left out because their file does not exist."""

    name: str
    samples: list[Sample]
    classes: list[str] | None = None
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        kept = f"{len(self.samples)} samples"
        lines = [f"{self.name}: {kept}, {len(self.missing)} left out (file not found)", *self.notes]
        if self.missing:
            lines.append(f"  missing, e.g. {self.missing[:3]}")
        return "\n".join(lines)


def _present(name: str, samples: list[Sample], missing: list[str], notes: list[str]) -> EvalSet:
    found = [s for s in samples if os.path.isfile(s.path)]
    missing = missing + [s.path for s in samples if not os.path.isfile(s.path)]
    if not found:
        raise FileNotFoundError(
            f"{name}: none of the {len(samples) + len(missing)} media files exist (e.g. {missing[:2]}); "
            "check --video-root (benchmarks) or the manifest's paths"
        )
    return EvalSet(name, found, missing=missing, notes=notes)


def load_manifest(path: str | Path, root: str | Path | None = None) -> EvalSet:
    """A JSON Lines manifest (see :mod:`videovl.data.sources.manifest`); its classes are its sorted labels."""
    samples = read_manifest(path, root)
    out = _present(str(path), samples, [], [])
    labels = build_label_map(samples)
    out.classes = list(labels) if labels else None
    return out


def _annotation_file(name: str, annotations: str | Path) -> Path:
    path = Path(annotations)
    if path.is_dir():
        path = path / BENCHMARKS[name][0]
    if not path.is_file():
        raise FileNotFoundError(
            f"{name} annotations: {path} does not exist; pass the file ({BENCHMARKS[name][0]}) or its folder "
            "as --annotations"
        )
    return path


def load_benchmark(name: str, annotations: str | Path, video_root: str | Path) -> EvalSet:
    """The evaluation split of ``name`` (one of :data:`BENCHMARKS`) with videos under ``video_root``."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark '{name}'; expected one of {sorted(BENCHMARKS)}")
    if "qa" in BENCHMARKS[name][1]:
        raise ValueError(f"'{name}' is a question-answering benchmark: read it with load_qa_benchmark")
    if not Path(video_root).is_dir():
        raise FileNotFoundError(f"--video-root {video_root} is not a folder")
    path = _annotation_file(name, annotations)
    report: AnnotationReport
    classes = None
    if name == "msrvtt":
        samples, report = read_msrvtt_test(path, video_root)
    elif name == "activitynet":
        samples, report = read_activitynet(path, video_root)
    else:
        label_map = next(
            (read_label_map(m) for n in _K400_LABEL_MAPS if (m := path.parent / n).is_file()), None
        )
        samples, report = read_kinetics(path, video_root, label_map=label_map)
        labels = label_map or build_label_map(samples)
        classes = sorted(labels, key=labels.__getitem__)
    problems = (
        [f"  {len(report.problems)} annotation problems, e.g. {report.problems[:2]}"]
        if report.problems
        else []
    )
    # Kinetics drops absent clips itself; the other loaders keep them for us to leave out.
    dropped = report.missing if name == "k400" else []
    out = _present(f"{name} ({path.name})", samples, dropped, [f"  {report.summary()}", *problems])
    out.classes = classes
    return out


def read_classes(path: str | Path) -> list[str]:
    """Class names, one a line (line index = class id); blank lines are skipped."""
    names = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"{path}: expected one unique class name a line, got {len(names)} lines")
    return names


def resolve_classes(eval_set: EvalSet, classes_file: str | Path | None) -> list[str]:
    """The class list of an action evaluation: ``classes_file`` if given, else the set's own; every label
    of the samples must be in it."""
    classes = read_classes(classes_file) if classes_file else eval_set.classes
    if not classes:
        raise ValueError(
            f"{eval_set.name}: no class list (no sample has a 'label'); pass --classes FILE, one name a line"
        )
    unknown = sorted({s.label for s in eval_set.samples if s.label is not None} - set(classes))
    if unknown:
        raise ValueError(
            f"{len(unknown)} labels of {eval_set.name} are not in the class list ({len(classes)} classes), "
            f"e.g. {unknown[:3]}; pass a --classes file that lists them"
        )
    return classes


# ------------------------------------------------------------------------------------ question answering


@dataclass
class QASet:
    """Questions to answer whose video exists, the absent videos (their questions left out and counted),
    and the benchmark's closed answer list when it has one."""

    name: str
    questions: list[QASample]
    missing: list[str] = field(default_factory=list)  # absent video files
    questions_without_video: int = 0
    answer_list: list[str] | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        videos = len({q.video for q in self.questions})
        lines = [
            f"{self.name}: {len(self.questions)} questions on {videos} videos; {len(self.missing)} videos "
            f"not found ({self.questions_without_video} questions left out)",
            *self.notes,
        ]
        if self.missing:
            lines.append(f"  missing, e.g. {self.missing[:3]}")
        return "\n".join(lines)


def _qa_present(name: str, questions: list[QASample], report: AnnotationReport, answers) -> QASet:
    present = {v: os.path.isfile(v) for v in dict.fromkeys(q.video for q in questions)}
    problems = (
        [f"  {len(report.problems)} annotation problems, e.g. {report.problems[:2]}"]
        if report.problems
        else []
    )
    return QASet(
        name,
        [q for q in questions if present[q.video]],
        missing=[v for v, ok in present.items() if not ok],
        questions_without_video=sum(not present[q.video] for q in questions),
        answer_list=answers,
        notes=[f"  {report.summary()}", *problems],
    )


def load_qa_file(
    path: str | Path, video_root: str | Path | None = None, answer_list: str | Path | None = None
) -> QASet:
    """A question file in the MSRVTT-QA layout (the demo's ``qa_test.jsonl``), videos under ``video_root``
    (default: the file's folder); ``answer_list``: its closed answer list, if any."""
    questions, report = read_msrvtt_qa(path, video_root, answer_list=answer_list)
    answers = read_answer_list(answer_list) if answer_list is not None else None
    return _qa_present(str(path), questions, report, answers)


def load_qa_benchmark(
    name: str, annotations: str | Path, video_root: str | Path, split: str = "test"
) -> QASet:
    """``activitynet-qa`` (the folder of ``{split}_q.json`` and ``{split}_a.json``) or ``msrvtt-qa`` (a
    question file in the VindLU / LAVIS layout, or its folder holding ``{split}.json`` or
    ``msrvtt_qa_{split}.json``, with the answer list ``answer_list.json`` or ``msrvtt_qa_answer_list.json``
    beside it), videos under ``video_root``."""
    if name not in ("activitynet-qa", "msrvtt-qa"):
        raise ValueError(f"unknown QA benchmark '{name}'; expected activitynet-qa or msrvtt-qa")
    if split not in QA_SPLITS:
        raise ValueError(f"QA split must be one of {QA_SPLITS}, got {split!r}")
    if not Path(video_root).is_dir():
        raise FileNotFoundError(f"--video-root {video_root} is not a folder")
    path = Path(annotations)
    if name == "activitynet-qa":
        folder = path.parent if path.is_file() else path
        questions, report = read_activitynet_qa(folder, split, video_root)
        return _qa_present(f"{name} {split} ({folder})", questions, report, None)
    if path.is_dir():
        names = [f.format(split=split) for f in _MSRVTT_QA_FILES]
        found = next((path / n for n in names if (path / n).is_file()), None)
        if found is None:
            raise FileNotFoundError(
                f"msrvtt-qa annotations: none of {names} is in {path}; pass the question file or its folder"
            )
        path = found
    elif not path.is_file():
        raise FileNotFoundError(f"msrvtt-qa annotations: {path} does not exist")
    answers = next((path.parent / n for n in _ANSWER_LISTS if (path.parent / n).is_file()), None)
    questions, report = read_msrvtt_qa(path, video_root, answer_list=answers)
    return _qa_present(
        f"{name} ({path.name})", questions, report, read_answer_list(answers) if answers else None
    )
