"""Action-recognition metrics against straightforward loops."""

import pytest
import torch

from videovl.data.corpora.demo import MOTION_CLASSES
from videovl.eval import (
    average_views,
    classification_metrics,
    mean_class_accuracy,
    order_pair_accuracy,
    order_partners,
    topk_accuracy,
)


def test_topk_and_mean_class_accuracy_match_loops():
    gen = torch.Generator().manual_seed(0)
    scores, labels = torch.randn(50, 7, generator=gen), torch.randint(0, 7, (50,), generator=gen)
    labels[:20] = 0  # imbalanced: class 0 dominates, so mean class accuracy differs from top-1
    got = classification_metrics(scores, labels)
    order = [sorted(range(7), key=lambda c: -float(row[c])) for row in scores]
    for k in (1, 5):
        assert got[f"action/top{k}"] == pytest.approx(
            100 * sum(lab in o[:k] for lab, o in zip(labels.tolist(), order)) / 50
        )
    per_class = {}
    for lab, o in zip(labels.tolist(), order):
        per_class.setdefault(lab, []).append(o[0] == lab)
    want = 100 * sum(sum(v) / len(v) for v in per_class.values()) / len(per_class)
    assert got["action/mean_class_acc"] == pytest.approx(want)
    assert set(got) == {"action/top1", "action/top5", "action/mean_class_acc"}


def test_ties_count_as_correct_and_warn():
    scores = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    with pytest.warns(UserWarning, match="optimistic"):
        assert topk_accuracy(scores, torch.tensor([1, 2]), ks=(1, 2)) == {
            "action/top1": 50.0,
            "action/top2": 100.0,
        }
    assert topk_accuracy(torch.eye(3), torch.tensor([0, 1, 2]), ks=(5,)) == {"action/top5": 100.0}  # k > K


def test_average_views_consecutive_and_by_id():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(4 * 3, 5, generator=gen)  # 4 videos x 3 views
    want = torch.stack([logits[3 * i : 3 * i + 3].double().softmax(-1).mean(0) for i in range(4)])
    assert torch.allclose(average_views(logits, num_views=3), want)
    ids = torch.tensor([7, 7, 7, 2, 2, 2, 9, 9, 9, 4, 4, 4])
    perm = torch.randperm(12, generator=gen)
    by_id = average_views(logits[perm], video_ids=ids[perm])  # rows in ascending id order: 2, 4, 7, 9
    assert torch.allclose(by_id, want[[1, 3, 0, 2]], atol=1e-6)
    assert torch.allclose(
        average_views(logits, num_views=3, softmax=False), logits.view(4, 3, 5).mean(1).double()
    )
    with pytest.raises(ValueError, match="num_views=5"):
        average_views(logits, num_views=5)


def test_softmax_first_stops_one_confident_view_outvoting():
    # view 1 is extremely sure of class 0, views 2 and 3 mildly prefer class 1
    logits = torch.tensor([[20.0, 0.0], [0.0, 3.0], [0.0, 3.0]])
    assert average_views(logits, num_views=3).argmax().item() == 1
    assert average_views(logits, num_views=3, softmax=False).argmax().item() == 0


def test_a_confidently_wrong_clip_is_not_rescued_by_underflow_ties():
    # class 0 is 150 logits ahead: in float32 every other class would have probability exactly 0, and the
    # true class 3 would tie classes 1, 2, 4, 5 and 6 and count as correct at top-5
    logits = torch.tensor([[150.0, 10.0, 9.0, 0.0, 8.0, 7.0, 6.0]])
    probs = average_views(logits, num_views=1)
    assert (probs[0, 1:] > 0).all()
    assert topk_accuracy(probs, torch.tensor([3]), ks=(1, 5)) == {"action/top1": 0.0, "action/top5": 0.0}


def test_bad_labels_are_named():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        mean_class_accuracy(torch.randn(2, 3), torch.tensor([0, 3]))


def test_order_partners_are_the_same_words_in_another_order():
    assert order_partners(MOTION_CLASSES) == {0: [7], 7: [0], 1: [6], 6: [1], 2: [5], 5: [2], 3: [4], 4: [3]}
    ssv2 = [
        "Pushing something from left to right",
        "Pushing something from right to left",
        "Opening something",
    ]
    assert order_partners(ssv2) == {0: [1], 1: [0]}
    assert order_partners(["a", "b"]) == {}


def test_order_pair_accuracy_counts_only_the_partner():
    classes = ["left then up", "up then left", "down then right"]
    scores = torch.tensor(
        [
            [0.5, 0.4, 0.9],  # true 0 beats its partner 1 (though class 2 wins top-1): correct
            [0.6, 0.3, 0.1],  # true 1 loses to its partner 0: wrong
            [0.2, 0.2, 0.3],  # class 2 has no partner: not counted
            [0.7, 0.7, 0.0],  # a tie with the partner is not a win
        ]
    )
    out = order_pair_accuracy(scores, torch.tensor([0, 1, 2, 0]), classes)
    assert out == {"action/order_pair_acc": 100 / 3, "action/order_pair_samples": 3.0}
    assert order_pair_accuracy(scores[:, :1], torch.tensor([0, 0, 0, 0]), ["x"]) == {}
