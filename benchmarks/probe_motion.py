"""Which side holds motion and word order back: linear probes on each tower of a trained checkpoint.

    python benchmarks/probe_motion.py --checkpoint runs/demo/model --root data/moving_digits
    python benchmarks/probe_motion.py --checkpoint runs/shapes/model --root data/shapes

A multinomial logistic regression (scikit-learn) learns the motion class (the manifests' ``label``) on the
train split and is scored on the test split, once from each of:
  text tower   the locked tower's pooled sentence vector of each caption (before the joint space),
  text joint   the same captions' sentence embeddings in the joint space,
  video        the clips' embeddings in the joint space (what retrieval and zero-shot use),
  frames       the clips' per-temporal-position embeddings, concatenated in order,
  frame mean   their mean over time,
with motion top-1 and accuracy on the order pairs (classes named by the same words in another order,
``videovl.eval.order_pair_accuracy``; chance 50 %). Zero-shot retrieval asks more than a probe does, so
a side whose probe cannot tell the classes apart is a side the contrastive loss could not teach them
either; a gap between ``frames`` and ``video`` is order the encoder computed and its pooling lost.
``--c`` sets the inverse regularisation strengths tried (each is printed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from videovl.data.sources import read_manifest
from videovl.data.tokenizer import load_tokenizer
from videovl.eval.classification import order_pair_accuracy
from videovl.eval.embed import embed_videos, tokenized_batches
from videovl.eval.extract import eval_dataset
from videovl.models.checkpoint import load_checkpoint


@torch.no_grad()
def caption_features(model, tokenizer, captions: list[str], max_length: int) -> dict[str, np.ndarray]:
    tower, joint = [], []
    for batch in tokenized_batches(tokenizer, captions, 256, max_length):
        pooled = model.text_states(batch["input_ids"], batch["attention_mask"]).pooled  # adapter included
        tower.append(pooled)
        joint.append(F.normalize(model.text_proj(pooled), dim=-1))  # encode_text's sentence, one tower pass
    return {"text tower": torch.cat(tower).numpy(), "text joint": torch.cat(joint).numpy()}


def split_features(model, cfg, tokenizer, manifest: Path, classes: list[str], workers: int) -> dict:
    """Each feature kind of one split with its labels: {kind: (X, y)}."""
    samples = read_manifest(manifest)
    clip_labels = np.array([classes.index(s.label) for s in samples])
    captions = [(c, y) for s, y in zip(samples, clip_labels) for c in s.captions]
    feats = caption_features(model, tokenizer, [c for c, _ in captions], cfg.model.text.max_length)
    cap_labels = np.array([y for _, y in captions])
    out = {kind: (x, cap_labels) for kind, x in feats.items()}
    dataset = eval_dataset(list(samples), cfg.data, cfg.data.num_frames)
    video = embed_videos(model, dataset, batch_size=64, num_workers=workers)  # rows in dataset order
    valid, labels = video["valid"].numpy(), clip_labels
    out["video"] = (video["clip"].numpy()[valid], labels[valid])
    frames = video["frames"].numpy()[valid]  # (N, T', D)
    out["frames"] = (frames.reshape(len(frames), -1), labels[valid])
    out["frame mean"] = (frames.mean(1), labels[valid])
    return out


def probe(x_tr, y_tr, x_te, y_te, classes: list[str], c: float) -> dict[str, float]:
    """Fit a logistic regression on (x_tr, y_tr); test top-1 and order-pair accuracy (%) on (x_te, y_te)."""
    fitted = LogisticRegression(C=c, max_iter=5000).fit(x_tr, y_tr)
    scores = torch.full((len(y_te), len(classes)), -torch.inf, dtype=torch.float64)
    # Classes absent from the train split never win.
    scores[:, torch.from_numpy(fitted.classes_)] = torch.from_numpy(fitted.decision_function(x_te)).double()
    labels = torch.from_numpy(np.asarray(y_te))
    top1 = float(100 * (scores.argmax(1) == labels).double().mean())
    order = order_pair_accuracy(scores, labels, classes).get("action/order_pair_acc", float("nan"))
    return {"top1": top1, "order_pairs": order}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="model folder written by pretraining")
    p.add_argument(
        "--root", required=True, help="corpus folder with video_{train,test}.jsonl and classes.txt"
    )
    p.add_argument(
        "--c", type=float, nargs="+", default=[1.0, 100.0], help="inverse regularisation strengths"
    )
    p.add_argument("--workers", type=int, default=1)
    a = p.parse_args(argv)
    root = Path(a.root)
    classes = [c for c in (root / "classes.txt").read_text().splitlines() if c]
    model, cfg = load_checkpoint(a.checkpoint)
    model.eval()
    tokenizer = load_tokenizer(cfg.model.text)
    train, test = (
        split_features(model, cfg, tokenizer, root / f"video_{s}.jsonl", classes, a.workers)
        for s in ("train", "test")
    )
    print(f"{'features':<12} {'C':>6} {'train n':>8} {'test n':>7} {'motion top-1':>13} {'order pairs':>12}")
    results = {}
    for kind in train:
        (x_tr, y_tr), (x_te, y_te) = train[kind], test[kind]
        for c in a.c:
            r = results[f"{kind} C={c:g}"] = probe(x_tr, y_tr, x_te, y_te, classes, c)
            sizes = f"{len(y_tr):>8} {len(y_te):>7}"
            print(f"{kind:<12} {c:>6g} {sizes} {r['top1']:>12.1f}% {r['order_pairs']:>11.1f}%")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
