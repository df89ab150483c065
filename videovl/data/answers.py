"""Answers of question answering: VQA-style normalisation, and the closed vocabulary of training answers.

``normalize_answer`` is what "the same answer" means everywhere (scoring, the answer list, classification
targets): lowercase; commas inside numbers and periods outside decimals dropped; other punctuation between
two word characters becomes a space ("t-shirt" -> "t shirt", "black/white" -> "black white"), elsewhere it
is dropped ("yes!" -> "yes"); apostrophes stay only inside a word ("don't"); the articles a, an, the are
removed; number words zero to ninety-nine become digits ("twenty one" -> "21"); common contractions written
without their apostrophe get it back ("dont" -> "don't"). "none" stays a word (VQA maps it to 0, which
would turn "what is he holding? none" into a count), and so does "its" (a possessive as often as not).

``AnswerVocab`` is the top-N training answers (default 1,500, the ClipBERT / ALPRO classifier size) by
frequency after normalisation, ties broken alphabetically so the list is a pure function of the answers.
It is saved as JSON, so it can travel with a model checkpoint.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["normalize_answer", "AnswerVocab"]

_UNITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
          "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
          "nineteen")  # fmt: skip
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}  # fmt: skip
_NUMBERS = {w: i for i, w in enumerate(_UNITS)} | _TENS
_ARTICLES = frozenset({"a", "an", "the"})
_CONTRACTIONS = {
    w.replace("'", ""): w
    for w in (
        "don't", "doesn't", "didn't", "isn't", "aren't", "wasn't", "weren't", "can't", "couldn't",
        "won't", "wouldn't", "shouldn't", "hasn't", "haven't", "hadn't", "ain't", "i'm", "i've",
        "you're", "you've", "they're", "they've", "we're", "we've", "that's", "what's", "who's",
        "there's", "he's", "she's", "let's", "o'clock",
    )
}  # fmt: skip
_PUNCT = re.escape("".join(c for c in string.punctuation if c not in ".'"))
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_PERIOD = re.compile(r"(?<!\d)\.|\.(?!\d)")  # every period except a decimal point
_JOINER = re.compile(rf"(?<=\w)[{_PUNCT}]+(?=\w)")
_OTHER = re.compile(rf"[{_PUNCT}]")
_QUOTE = re.compile(r"(?<!\w)'|'(?!\w)")  # an apostrophe not inside a word


def normalize_answer(answer: str) -> str:
    """The canonical form of an answer; see the module docstring. ``"The Two dogs."`` -> ``"2 dogs"``."""
    text = answer.lower().replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    text = _THOUSANDS.sub("", text)
    text = _PERIOD.sub("", text)
    text = _OTHER.sub("", _JOINER.sub(" ", text))
    text = _QUOTE.sub("", text)
    words: list[str] = []
    for word in text.split():
        if word in _ARTICLES:
            continue
        word = _CONTRACTIONS.get(word, word)
        value = _NUMBERS.get(word)
        if value is not None and 1 <= value <= 9 and words and words[-1] in {str(t) for t in _TENS.values()}:
            words[-1] = str(int(words[-1]) + value)  # "twenty one" -> "21"
            continue
        words.append(word if value is None else str(value))
    return " ".join(words)


@dataclass(frozen=True)
class AnswerVocab:
    """A closed answer list: normalised answers, most frequent first, with their training counts."""

    answers: tuple[str, ...]
    counts: tuple[int, ...] = ()
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.counts and len(self.counts) != len(self.answers):
            raise ValueError(f"AnswerVocab: {len(self.answers)} answers but {len(self.counts)} counts")
        index = {a: i for i, a in enumerate(self.answers)}
        if len(index) != len(self.answers):
            dup = [a for a, n in Counter(self.answers).items() if n > 1]
            raise ValueError(f"AnswerVocab: answers repeat, e.g. {dup[:3]}; each may appear once")
        object.__setattr__(self, "_index", index)

    @classmethod
    def build(cls, answers: Iterable[str], top_n: int = 1500) -> AnswerVocab:
        """The ``top_n`` most frequent normalised answers; ties go to the alphabetically first."""
        if top_n < 1:
            raise ValueError(f"AnswerVocab.build: top_n must be >= 1, got {top_n}")
        counts = Counter(normalize_answer(a) for a in answers)
        counts.pop("", None)  # an answer that was only punctuation or articles names nothing
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top_n]
        return cls(tuple(a for a, _ in ranked), tuple(n for _, n in ranked))

    def __len__(self) -> int:
        return len(self.answers)

    def __contains__(self, answer: object) -> bool:
        return isinstance(answer, str) and normalize_answer(answer) in self._index

    def index(self, answer: str) -> int | None:
        """The position of ``answer`` (normalised first), or None when it is outside the list."""
        return self._index.get(normalize_answer(answer))

    def coverage(self, answers: Iterable[str]) -> float:
        """The fraction of ``answers`` (one per question) whose normalised form is in the list."""
        answers = list(answers)
        return sum(a in self for a in answers) / len(answers) if answers else float("nan")

    def save(self, path: str | Path) -> None:
        data = {"kind": "videovl answer vocabulary", "normalization": "vqa", "answers": list(self.answers),
                "counts": list(self.counts)}  # fmt: skip
        Path(path).write_text(json.dumps(data, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> AnswerVocab:
        """A list saved by :meth:`save`, or a plain JSON list of answer strings (an answer-list file)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ValueError(f"answer vocabulary {path}: cannot read it as JSON ({err})") from err
        if isinstance(data, dict):
            answers, counts = data.get("answers"), data.get("counts") or []
        else:
            answers, counts = data, []
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise ValueError(
                f"answer vocabulary {path}: expected a JSON list of answer strings or an object with an "
                "'answers' list (as AnswerVocab.save writes)"
            )
        # A foreign list may hold raw answers; two that normalise alike keep the first's place.
        seen = dict.fromkeys(normalize_answer(a) for a in answers)
        seen.pop("", None)
        if len(seen) != len(answers):
            counts = []
        return cls(tuple(seen), tuple(int(n) for n in counts))
