"""From a stage's sources to per-modality loaders of step-indexed batches."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from videovl.config import KINDS, Config, ConfigError, DataSource, StageConfig, not_one_of
from videovl.data.annotations.msrvtt_qa import read_msrvtt_qa
from videovl.data.collate import Collator
from videovl.data.datasets import ClipDataset, DrawConcat, QADataset, build_label_map
from videovl.data.loader import build_loader
from videovl.data.media.transforms import build_transform
from videovl.data.mixing import MixedBatches, modality_order
from videovl.data.samplers import NeighbourBatchSampler, WeightedBatchSampler
from videovl.data.sources import (
    ManifestError,
    QASample,
    Sample,
    caption_counts,
    labels,
    modalities,
    read_manifest,
)
from videovl.data.sources.shards import HashedLabels, ShardSet, open_shards
from videovl.data.stream import ShardSource, StreamBatches

__all__ = [
    "StageData",
    "stage_seed",
    "resolve_manifest",
    "load_source",
    "LoadedSources",
    "load_stage_sources",
    "build_stage_data",
    "make_loader",
    "open_batches",
    "build_eval_dataset",
    "caption_vocabulary",
    "check_caption_vocabulary",
]


def stage_seed(cfg: Config, stage_index: int) -> int:
    """The seed of a stage's batches and views: each stage draws its own."""
    return cfg.train.seed + 1000 * stage_index


def resolve_manifest(spec: str, cfg: Config) -> Path:
    """``demo:NAME`` is a manifest of the built-in demo corpus; anything else is a path."""
    if spec.startswith("demo:"):
        return Path(cfg.data.demo_root) / spec[5:]
    return Path(spec)


def load_source(source: DataSource, cfg: Config, where: str) -> Sequence[Sample] | ShardSet | list[QASample]:
    """A manifest's samples, a shard set (read as a stream later), or a question file's questions."""
    if source.kind not in KINDS:
        raise not_one_of(f"{where}.kind", source.kind, KINDS)
    if bool(source.manifest) == bool(source.shards):
        raise ConfigError(
            f"{where} needs exactly one of 'manifest' (a JSON Lines file) or 'shards' (a tar pattern such as "
            f"/data/{{00000..00099}}.tar); got manifest={source.manifest!r}, shards={source.shards!r}"
        )
    if source.kind == "video-qa":
        return load_questions(source, cfg, where)
    if source.shards:
        try:
            return open_shards(source.shards, source.kind, caption_key=source.caption_key,
                               label_key=source.label_key, shuffle_block=source.shuffle_block,
                               where=f"{where}.shards")  # fmt: skip
        except ManifestError as e:
            raise ConfigError(str(e)) from None
    try:
        samples = read_manifest(resolve_manifest(source.manifest, cfg), source.root)
    except ManifestError as e:  # a missing file or a bad line: say which source of which stage
        raise ConfigError(f"{where}.manifest: {e}") from None
    modality, what = source.kind.split("-")
    # Column-wise checks: a manifest of millions of lines builds no Sample object here.
    wrong = np.flatnonzero(modalities(samples) != modality)
    if wrong.size:
        first = samples[int(wrong[0])]
        raise ConfigError(
            f"{where}: kind '{source.kind}' but {wrong.size} samples are {first.modality}s "
            f"(first: {first.path})"
        )
    lacking = caption_counts(samples) == 0 if what == "text" else labels(samples) == None  # noqa: E711
    missing = np.flatnonzero(lacking)
    if missing.size:
        key = "caption" if what == "text" else "label"
        raise ConfigError(
            f"{where}: kind '{source.kind}' needs a '{key}' on every sample; "
            f"{missing.size} lack it (first: {samples[int(missing[0])].path})"
        )
    return samples


def load_questions(source: DataSource, cfg: Config, where: str) -> list[QASample]:
    """The questions of a ``video-qa`` source: a question file in the MSRVTT-QA layout (a JSON list or
    JSON Lines of ``{video, question, answer, question_id}``, videos relative to ``root`` or the file's
    folder). Rows that lack a field are left out and counted; a file without questions is an error."""
    if source.shards:
        raise ConfigError(f"{where}: kind 'video-qa' reads a question file (manifest: ...), not shards")
    path = resolve_manifest(source.manifest, cfg)
    try:
        questions, report = read_msrvtt_qa(path, source.root)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{where}.manifest: {e}") from None
    if not questions:
        raise ConfigError(
            f"{where}.manifest: {path} holds no usable question ({'; '.join(report.problems[:3])}); "
            "kind 'video-qa' reads {video, question, answer, question_id} rows"
        )
    if report.problems:
        logging.getLogger(__name__).warning("%s: %s", where, report.summary())
    return questions


@dataclass
class StageData:
    modality: str
    dataset: DrawConcat | None  # the manifest sources' datasets (None: shards only)
    sizes: list[int]
    weights: list[float]
    batch_size: int
    num_frames: int
    # Every source in order (ClipDatasets and ShardSources) when any is shards: then batches stream.
    streamed: list = field(default_factory=list)


# A stage's sources with what each holds: a manifest's samples or a shard set.
LoadedSources = list[tuple[DataSource, Sequence[Sample] | ShardSet]]


def load_stage_sources(cfg: Config, stage_index: int) -> LoadedSources:
    """Every source of stage ``stage_index`` read and checked (:func:`load_source`); errors name the key."""
    stage = cfg.stages[stage_index]
    if not stage.sources:
        raise ConfigError(f"stages.{stage_index} ('{stage.name}') has no sources")
    loaded = [
        (s, load_source(s, cfg, f"stages.{stage_index}.sources.{i}")) for i, s in enumerate(stage.sources)
    ]
    kinds = {s.kind for s in stage.sources}
    if "video-qa" in kinds and kinds != {"video-qa"}:
        raise ConfigError(
            f"stages.{stage_index} mixes kind 'video-qa' with {sorted(kinds - {'video-qa'})}: question "
            "answering batches carry answers, so a stage trains on question files alone"
        )
    if "video-qa" in kinds and stage.mining.enabled:
        raise ConfigError(f"stages.{stage_index}.mining: mining does not apply to video-qa sources")
    if stage.mining.enabled and any(
        isinstance(x, ShardSet) and s.kind.startswith("video") for s, x in loaded
    ):
        raise ConfigError(
            f"stages.{stage_index}.mining needs every sample indexed up front; it cannot mine over "
            "shard sources: disable mining or use manifests"
        )
    return loaded


def build_stage_data(
    cfg: Config, stage_index: int, loaded: LoadedSources | None = None
) -> dict[str, StageData]:
    """One concatenated training dataset per modality present in the stage, from its ``loaded`` sources
    (:func:`load_stage_sources`, which the loop's whole-run check has called; read here if not given)."""
    stage = cfg.stages[stage_index]
    if loaded is None:
        loaded = load_stage_sources(cfg, stage_index)
    if any(isinstance(x, ShardSet) and s.kind.endswith("label") for s, x in loaded):
        # Shard labels are unknown until read: ids from the names, for the manifests' labels too, so the
        # same label is one id whichever source it comes from.
        label_map = HashedLabels()
    else:
        labelled = [samples for s, samples in loaded if s.kind.endswith("label")]
        label_map = build_label_map(*labelled) if labelled else None
    out: dict[str, StageData] = {}
    for modality in ("image", "video"):
        parts = [(s, x) for s, x in loaded if s.kind.startswith(modality)]
        if not parts:
            continue
        frames = 1 if modality == "image" else (stage.num_frames or cfg.data.num_frames)
        transform = build_transform(cfg.data, train=True)
        datasets, offset = [], 0
        for source, samples in parts:
            is_label = source.kind.endswith("label")
            if source.kind == "video-qa":
                seed = stage_seed(cfg, stage_index)
                datasets.append(
                    QADataset(samples, num_frames=frames, transform=transform, train=True,
                              backend=cfg.data.backend, index_offset=offset, seed=seed)
                )  # fmt: skip
                offset += len(datasets[-1])
                continue
            datasets.append(
                ClipDataset(
                    [] if isinstance(samples, ShardSet) else samples,
                    num_frames=frames,
                    transform=transform,
                    train=True,
                    backend=cfg.data.backend,
                    text="label" if is_label else "caption",
                    prompt=source.prompt,
                    label_to_id=label_map if is_label else None,
                    index_offset=offset,
                    seed=stage_seed(cfg, stage_index),  # each stage draws its own views
                )
            )
            if isinstance(samples, ShardSet):
                datasets[-1] = ShardSource(samples, datasets[-1], offset)
            offset += len(datasets[-1])
        streamed = any(isinstance(d, ShardSource) for d in datasets)
        out[modality] = StageData(
            modality,
            DrawConcat(manifests)
            if (manifests := [d for d in datasets if isinstance(d, ClipDataset)])
            else None,
            [len(d) for d in datasets],
            [s.weight for s, _ in parts],
            stage.batch_size or cfg.data.batch_size,
            frames,
            datasets if streamed else [],
        )
    return out


def make_loader(
    data: StageData,
    collator: Collator,
    cfg: Config,
    *,
    rank: int,
    world_size: int,
    start_step: int,
    seed: int,
    neighbours=None,
    stage: StageConfig | None = None,
    positions: dict[int, dict[int, int]] | None = None,
):
    """A loader whose batch ``j`` is the sampler's step ``start_step + j`` for this process; shard
    streams open at ``positions`` (lane -> part -> position, as the batches reported them)."""
    if data.streamed:
        try:
            stream = StreamBatches(
                data.streamed, data.weights, data.batch_size, rank=rank, world_size=world_size,
                num_workers=cfg.data.num_workers, seed=seed, start_step=start_step, positions=positions,
            )  # fmt: skip
        except ValueError as e:  # too few shard samples for the processes x workers
            raise ConfigError(f"the {data.modality} sources of the stage: {e}") from None
        return build_loader(stream, collate_fn=collator, num_workers=cfg.data.num_workers, seed=seed)
    if neighbours is not None:
        sampler = NeighbourBatchSampler(
            neighbours,
            data.batch_size,
            stage.mining.neighbours_per_seed,
            rank=rank,
            world_size=world_size,
            seed=seed,
            start_step=start_step,
        )
    else:
        sampler = WeightedBatchSampler(
            data.sizes,
            data.weights,
            data.batch_size,
            rank=rank,
            world_size=world_size,
            seed=seed,
            start_step=start_step,
        )
    return build_loader(
        data.dataset, batch_sampler=sampler, collate_fn=collator, num_workers=cfg.data.num_workers
    )


def open_batches(
    cfg: Config,
    data: dict[str, StageData],
    stage: StageConfig,
    collator: Collator,
    seed: int,
    micro_step: int,
    rank: int,
    world_size: int,
    neighbours=None,
    positions: dict[str, dict[int, dict[int, int]]] | None = None,
):
    """The stage's stream of ``(modality, batch)`` from micro-step ``micro_step`` on: modalities mixed by
    ``stage.video_ratio`` in an order every process agrees on; video batches from neighbourhoods when a
    mined ``neighbours`` table is given; shard streams at the recorded ``positions`` (modality -> lane ->
    part -> position at ``micro_step``; None: replayed)."""
    ratio = stage.video_ratio if len(data) > 1 else (1.0 if "video" in data else 0.0)
    order = [modality_order(s, ratio, seed) for s in range(micro_step)]
    loaders = {
        m: make_loader(d, collator, cfg, rank=rank, world_size=world_size, seed=seed + (m == "video"),
                       start_step=order.count(m), neighbours=neighbours if m == "video" else None,
                       stage=stage, positions=None if positions is None else positions.get(m, {}))
        for m, d in data.items()
    }  # fmt: skip
    return iter(MixedBatches(loaders, ratio, seed, start_step=micro_step))


def build_eval_dataset(samples: list[Sample], cfg: Config, num_frames: int) -> ClipDataset:
    return ClipDataset(
        samples,
        num_frames=num_frames,
        transform=build_transform(cfg.data, train=False),
        train=False,
        backend=cfg.data.backend,
        text="none",
    )


def caption_vocabulary(data: dict[str, StageData], collator: Collator) -> torch.Tensor:
    """The sorted token ids of every text a batch of the stage can carry, as ``collator`` tokenizes it
    (``train.caption_vocab: corpus``): each caption of each manifest row, each label's prompt. Shard
    sources are not read up front: :func:`check_caption_vocabulary` refuses them before step one."""
    texts: set[str] = set()
    for part in data.values():
        for dataset in part.dataset.datasets if part.dataset is not None else []:
            texts |= dataset.texts()
    ordered, ids = sorted(texts), set()
    for i in range(0, len(ordered), 4096):
        tokens = collator.tokenize(ordered[i : i + 4096])
        ids.update(tokens["input_ids"][tokens["attention_mask"].bool()].unique().tolist())
    return torch.tensor(sorted(ids), dtype=torch.long)


def check_caption_vocabulary(cfg: Config, stage_index: int, loaded: LoadedSources) -> None:
    """Before step one: a stage whose caption loss would take its vocabulary from shards is an error."""
    stage = cfg.stages[stage_index]
    if cfg.train.caption_vocab != "corpus" or stage.losses.caption <= 0:
        return
    if any(isinstance(x, ShardSet) for _, x in loaded):
        raise ConfigError(
            f"stages.{stage_index} ('{stage.name}'): train.caption_vocab is 'corpus', which reads every "
            "caption of the stage before it starts, but the stage has shard sources (read as they stream); "
            "set train.caption_vocab=full"
        )
