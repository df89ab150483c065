import av
import numpy as np
import pytest

from videovl.data.corpora.shapes import SHAPE_MOTIONS, generate_shapes, order_partner
from videovl.data.sources import read_manifest

SMALL = {"train_videos": 12, "eval_videos": 12, "train_images": 4}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return generate_shapes(tmp_path_factory.mktemp("shapes") / "shapes", **SMALL)


def centroids(path: str) -> np.ndarray:
    with av.open(path) as container:
        ink = (
            np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(float).sum(-1)
        )
    ys, xs = np.mgrid[: ink.shape[1], : ink.shape[2]]
    total = ink.sum((1, 2))
    return np.stack([(ink * xs).sum((1, 2)) / total, (ink * ys).sum((1, 2)) / total], axis=1)


def test_every_class_has_an_order_partner_whose_caption_differs_only_by_order(corpus):
    assert len(SHAPE_MOTIONS) == 12 and corpus.classes_file.read_text().split("\n")[:12] == list(
        SHAPE_MOTIONS
    )
    assert all(
        order_partner(order_partner(m)) == m != order_partner(m) in SHAPE_MOTIONS for m in SHAPE_MOTIONS
    )
    row = read_manifest(corpus.video_test)[0]
    a, b = row.label.split(" then ")
    assert row.captions == [f"a {row.extra['colour']} {row.extra['shape']} moves {a} and then {b}"]


def test_clips_move_as_captioned(corpus):
    unit = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
    for split in ("train", "test"):
        rows = read_manifest(getattr(corpus, f"video_{split}"))
        assert len(rows) == 12 and len({r.captions[0] if split == "test" else r.id for r in rows}) == 12
        for row in rows:
            c = centroids(row.path)
            assert len(c) == 16
            for (s, e), direction in zip([(0, 7), (8, 15)], row.label.split(" then "), strict=True):
                assert (c[e] - c[s]) @ np.array(unit[direction]) > 1.5, (row.id, row.label)
    images = read_manifest(corpus.image_test)
    assert len(images) == 16 and images[0].captions == [f"a {images[0].label}"]


def test_cached_and_deterministic(corpus, tmp_path):
    assert generate_shapes(corpus.root, **SMALL) == corpus
    again = generate_shapes(tmp_path / "again", **SMALL)
    assert (again.root / "video_train.jsonl").read_text() == (corpus.root / "video_train.jsonl").read_text()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("x")
    with pytest.raises(FileExistsError, match="folder of its own"):
        generate_shapes(tmp_path / "busy", **SMALL)
