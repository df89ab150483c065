"""Caption scores through pycocoevalcap (Java): right captions score higher than wrong ones."""

import shutil

import pytest

pytest.importorskip("pycocoevalcap", reason="pycocoevalcap (optional 'caption' extra) is not installed")
if shutil.which("java") is None:
    pytest.skip("no Java runtime: pycocoevalcap's tokenizer and METEOR need one", allow_module_level=True)

from videovl.eval import score_captions  # noqa: E402

REFS = {
    "v1": ["a man is playing a guitar on stage", "someone plays the guitar", "a musician performs a song"],
    "v2": ["a dog runs across the grass", "a puppy is running in a park", "a dog chases a ball outside"],
    "v3": ["a woman is cooking pasta in a kitchen", "someone cooks noodles", "a chef prepares a meal"],
}


@pytest.mark.slow
def test_perfect_captions_beat_wrong_ones():
    right = {
        "v1": "a man is playing a guitar on stage.",
        "v2": "A dog runs across the grass",
        "v3": "someone cooks noodles",
    }
    wrong = {
        "v1": "a dog runs across the grass",
        "v2": "someone cooks noodles",
        "v3": "",
    }  # empty stays aligned
    good, bad = score_captions(right, REFS), score_captions(wrong, REFS)
    assert set(good) == {"caption/BLEU-4", "caption/METEOR", "caption/ROUGE-L", "caption/CIDEr"}
    for key in good:
        assert good[key] > bad[key], key
    assert good["caption/BLEU-4"] > 50 and good["caption/CIDEr"] > 100  # percentages


def test_missing_reference_is_named():
    with pytest.raises(ValueError, match="1 of 1 ids have none"):
        score_captions({"v9": "a cat"}, REFS)
