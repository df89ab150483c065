"""Caption scores with the field's standard scorer, pycocoevalcap: PTB tokenisation, then BLEU-4, METEOR,
ROUGE-L and CIDEr (SPICE is left out: it downloads CoreNLP models on first use, which fails offline).

pycocoevalcap is an optional dependency (``pip install 'videovl[caption]'``), and its tokenizer and METEOR
run in Java; both are checked up front so a missing piece is named instead of failing deep inside a
subprocess.
"""

from __future__ import annotations

import shutil
from functools import cache

from videovl.extras import require

__all__ = ["score_captions"]


@cache  # METEOR's JVM takes ~15 s to load its paraphrase tables: start it once per process, then reuse it
def _scorers():
    require("pycocoevalcap", "caption scoring")
    if shutil.which("java") is None:
        raise RuntimeError(
            "caption scoring needs a Java runtime on PATH (pycocoevalcap's PTB tokenizer and METEOR are Java "
            "programs); install one, e.g. `apt-get install default-jre-headless`, or skip --task caption"
        )
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    scorers = {
        "BLEU-4": (Bleu(4), {"verbose": 0}),  # Bleu prints its n-gram counts otherwise
        "METEOR": (Meteor(), {}),
        "ROUGE-L": (Rouge(), {}),
        "CIDEr": (Cider(), {}),
    }
    return PTBTokenizer, scorers


def score_captions(predictions: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
    """Score one generated caption per video id against that video's reference captions.

    Returns ``caption/BLEU-4``, ``caption/METEOR``, ``caption/ROUGE-L``, ``caption/CIDEr`` as percentages
    (x100, the scale papers report: "CIDEr 52.3"). CIDEr's document frequencies come from ``references``
    of the scored ids, so scores depend on the evaluated set, as on the benchmarks.
    """
    if not predictions:
        raise ValueError("no predictions to score: pass {video_id: generated caption}")
    missing = [k for k in predictions if not references.get(k)]
    if missing:
        raise ValueError(
            f"every prediction needs at least one reference; {len(missing)} of {len(predictions)} ids have "
            f"none, e.g. {missing[:3]}"
        )
    tokenizer, scorers = _scorers()
    ids = sorted(predictions)
    res = tokenizer().tokenize({k: [{"caption": predictions[k]}] for k in ids})
    gts = tokenizer().tokenize({k: [{"caption": r} for r in references[k]] for k in ids})
    out = {}
    for name, (scorer, kwargs) in scorers.items():
        score, _ = scorer.compute_score(gts, res, **kwargs)
        out[f"caption/{name}"] = 100 * float(score[-1] if isinstance(score, list) else score)
    return out
