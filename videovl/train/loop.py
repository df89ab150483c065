"""The pretraining loop: Accelerate end to end, stage after stage, resumable at any saved step.

:func:`pretrain` reads as its phases, in the Accelerate order: :func:`set_up` (model, whole-run check,
task, optimizer, one ``prepare``), :func:`resume_run` (the saved state, and whether it can continue exactly),
then for each stage :func:`start_stage` (freeze, data, mining, batches), :func:`train_step` (micro-batches
through the task, ``backward``, the optimizer) and :func:`after_step` (logs, validation, checkpoints), and
:func:`finish` (the test split, the bad-sample report).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch import nn

from videovl.config import Config, StageConfig, save_config, to_dict
from videovl.data.collate import Collator
from videovl.data.corpora.demo import generate_demo
from videovl.data.tokenizer import fill_token_ids, load_tokenizer
from videovl.eval.benchmarks import EvalSet, read_classes
from videovl.models.checkpoint import save_checkpoint
from videovl.models.factory import create_model, model_config
from videovl.models.model import VideoLanguageModel
from videovl.progress import progress
from videovl.tasks.pretrain import PretrainTask
from videovl.train.checks import check_run
from videovl.train.data import (
    LoadedSources,
    StageData,
    build_stage_data,
    caption_vocabulary,
    open_batches,
    resolve_manifest,
    stage_seed,
)
from videovl.train.evaluation import autocast_dtype, evaluate_action, evaluate_retrieval, load_eval_set
from videovl.train.mining import embed_for_mining, mining_dataset, nearest_neighbours
from videovl.train.optim import build_optimizer, describe_groups
from videovl.train.schedule import StagedSchedule
from videovl.train.stages import apply_freeze, masking_args
from videovl.train.state import Streams, TrainState

__all__ = ["pretrain", "NonFiniteLossError", "latest_checkpoint", "Validator"]

Validator = Callable[..., dict[str, float]]

log = logging.getLogger(__name__)

NEIGHBOURS_NAME = "neighbours.npy"


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class Run:
    """What every phase of a run shares; built by :func:`set_up`."""

    cfg: Config
    accelerator: Accelerator
    model: VideoLanguageModel
    task: nn.Module  # prepared
    optimizer: Any  # prepared
    tokenizer: Any
    collator: Collator
    validate: Validator
    sources: list[LoadedSources | None]
    lr_at: StagedSchedule
    state: TrainState = field(default_factory=TrainState)
    neighbours: np.ndarray | None = None  # the mined table of the current stage
    streams: Streams = field(default_factory=dict)  # this process's shard stream positions, this stage
    streams_known: bool = True  # False after resuming without usable positions: streams are replayed

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


@dataclass
class StageRun:
    """One stage under way: its data, its stream of batches and its progress bar."""

    index: int
    stage: StageConfig
    data: dict[str, StageData]
    seed: int
    mining: bool
    batches: Iterator
    bar: Any
    # seconds waited for batches and spent in steps since the last log line: the rate line's data share
    waited: float = 0.0
    stepped: float = 0.0


# ----------------------------------------------------------------------------------------------- phases


def pretrain(
    cfg: Config,
    accelerator: Accelerator,
    resume: str | None = None,
    stop_after: int | None = None,
    *,
    model: VideoLanguageModel | None = None,
    make_task: Callable[[VideoLanguageModel, int, int], nn.Module] = PretrainTask,
    validate: Validator | None = None,
    answers_questions: bool = False,
) -> dict[str, float]:
    """Run every stage of ``cfg``; returns the final metrics (test split if configured, else validation).

    ``stop_after``: save a checkpoint and return after this many optimizer steps of the whole run (for
    time-limited jobs; ``--resume latest`` continues exactly where it stopped). ``resume``: a checkpoint
    folder, "latest" (an error if there is none) or "auto" (the latest if there is one, else a fresh
    start). Fine-tuning passes a loaded ``model``, its own ``make_task(model, rank, world_size)`` (a
    module whose forward takes ``(batch, loss_weights, masking=None)`` and returns ``{"loss", ...}``) and
    ``validate(accelerator, model, cfg, tokenizer, stage) -> metrics`` (default: retrieval on the
    configured validation manifests); ``answers_questions``: ``make_task`` trains question answering, so
    its stages may read question files and weight the QA losses (any other run is stopped before step one
    if one does).
    """
    run = set_up(cfg, accelerator, model, make_task, validate, answers_questions)
    run.neighbours = resume_run(run, resume)
    state = run.state
    while state.stage < len(cfg.stages):
        if cfg.stages[state.stage].steps == 0:  # `stages.N.steps=0` leaves a stage out of a run
            accelerator.print(f"stage {state.stage} '{cfg.stages[state.stage].name}': 0 steps, skipped")
            state.stage += 1
            continue
        sr, done = start_stage(run), False
        while not done:
            out, modality, lr = train_step(run, sr)
            done, stop = after_step(run, sr, out, modality, lr, stop_after)
            if stop:
                accelerator.print(f"stopped after step {state.step}; continue with --resume latest")
                accelerator.end_training()
                return dict(state.metrics)
        end_stage(run, sr)
    return finish(run)


def set_up(
    cfg: Config,
    accelerator: Accelerator,
    model: VideoLanguageModel | None,
    make_task: Callable[[VideoLanguageModel, int, int], nn.Module],
    validate: Validator | None,
    answers_questions: bool = False,
) -> Run:
    """Data and model ready, the whole run checked, then task and optimizer through one ``prepare``."""
    out_dir, main = Path(cfg.train.output_dir), accelerator.is_main_process
    if cfg.data.demo:
        if main:
            generate_demo(cfg.data.demo_root, seed=cfg.data.demo_seed)
        accelerator.wait_for_everyone()
    if model is None:  # a pretrained checkpoint fixes the towers and the tokenizer before anything loads
        cfg.model = model_config(cfg.model)
    tokenizer = load_tokenizer(cfg.model.text)
    fill_token_ids(cfg.model.text, tokenizer)
    model = model if model is not None else create_model(cfg.model)
    # every stage, before anything is written or trained
    sources = check_run(cfg, model, answers_questions=answers_questions)
    if cfg.train.compile:  # in place: the state dict keeps its names
        model.visual.compile(backend=cfg.train.compile)
    if main:
        save_config(cfg, out_dir / "config.yaml")
    task = make_task(model, accelerator.process_index, accelerator.num_processes)
    t = cfg.train
    optimizer = build_optimizer(model, t.weight_decay, t.betas, t.text_lr_scale, t.pretrained_lr_scale)
    accelerator.print("optimizer groups:\n" + describe_groups(optimizer.param_groups))
    if main:  # which parameter went where, in full
        groups = describe_groups(optimizer.param_groups, full=True)
        (out_dir / "optimizer_groups.txt").write_text(groups + "\n")
    task, optimizer = accelerator.prepare(task, optimizer)
    accelerator.print(
        f"training on {accelerator.num_processes} processes ({accelerator.device}), "
        f"mixed precision: {accelerator.mixed_precision} (train.mixed_precision={cfg.train.mixed_precision})"
    )
    if validate is None:
        sets = _eval_sets(cfg)
        validate = lambda acc, m, c, tok, stage: _validate(acc, m, c, sets, tok, stage)  # noqa: E731
    collator = Collator(tokenizer, cfg.model.text.max_length)
    run = Run(cfg, accelerator, model, task, optimizer, tokenizer, collator, validate, sources,
              StagedSchedule(cfg.stages))  # fmt: skip
    accelerator.register_for_checkpointing(run.state)
    return run


def resume_run(run: Run, resume: str | None) -> np.ndarray | None:
    """Load the saved state ``resume`` names, say before step one whether the run continues exactly, and
    return the stage's mined neighbour table if it had one."""
    cfg, accelerator, state = run.cfg, run.accelerator, run.state
    out_dir = Path(cfg.train.output_dir)
    path = latest_checkpoint(out_dir) if resume in ("latest", "auto") else Path(resume) if resume else None
    if resume == "latest" and path is None:
        raise FileNotFoundError(
            f"--resume latest: no complete checkpoint under {out_dir / 'checkpoints'} "
            "(--resume auto starts fresh when there is none)"
        )
    if resume == "auto" and path is None:
        accelerator.print(
            f"--resume auto: no complete checkpoint under {out_dir / 'checkpoints'}, starting fresh"
        )
    neighbours = None
    if path is not None:
        accelerator.load_state(str(path))
        accelerator.print(f"resumed from {path}: stage {state.stage}, step {state.step}")
        note = resume_note(state, accelerator.num_processes, cfg.data.num_workers, _streamed(run))
        if note:
            accelerator.print(note)
        same = (state.processes, state.loader_workers) == (accelerator.num_processes, cfg.data.num_workers)
        run.streams_known = same and len(state.streams) == accelerator.num_processes
        if run.streams_known:  # else the streams are replayed, cut for the new counts
            run.streams = state.streams[accelerator.process_index]
        neighbours = _load_neighbours(path)
    state.processes, state.loader_workers = accelerator.num_processes, cfg.data.num_workers
    if cfg.train.tracker:
        accelerator.init_trackers("videovl", config=_flat(to_dict(cfg)))
    return neighbours


def resume_note(state: TrainState, processes: int, workers: int, streamed: bool) -> str | None:
    """What a resume with other process or loader-worker counts changes, and how to keep it exact; None
    when it continues exactly. Manifest batches depend on the step and the process count only; shard
    streams are cut into one range per (process, loader worker)."""
    if state.processes < 0:  # written before the counts were kept
        return None
    changed = []
    if state.processes != processes:
        changed.append(f"{state.processes} -> {processes} processes (the global batch changes size)")
    if state.loader_workers != workers and streamed:
        changed.append(
            f"data.num_workers {state.loader_workers} -> {workers} (shard streams are cut per worker)"
        )
    if not changed:
        return None
    return (
        f"resuming at step {state.step} with {', '.join(changed)}: training continues from there, but not "
        f"with the batches an uninterrupted run would have drawn; to keep it exact, launch "
        f"{state.processes} processes with data.num_workers={state.loader_workers}"
    )


def start_stage(run: Run) -> StageRun:
    """Freeze what the stage freezes, build its data, mine if it mines, and open its batches at the
    micro-step the state says (shard streams where the last checkpoint recorded them)."""
    cfg, accelerator, state = run.cfg, run.accelerator, run.state
    si, stage = state.stage, cfg.stages[state.stage]
    counts = apply_freeze(run.model, stage.freeze, stage.text_unlocked_layers)
    locked_text = "text" in stage.freeze and not stage.text_unlocked_layers
    run.model.text.remember_outputs(cfg.train.locked_text_cache if locked_text else 0)
    accelerator.print(
        f"stage {si} '{stage.name}': {stage.steps} steps, {counts['trainable']:,} trainable "
        f"parameters ({counts['frozen']:,} frozen)"
    )
    data = build_stage_data(cfg, si, run.sources[si])
    _set_caption_vocabulary(run, data)
    seed = stage_seed(cfg, si)
    mining = stage.mining.enabled and "video" in data
    if mining and (run.neighbours is None or state.mined_at < 0):
        run.neighbours = _mine(run, data, stage)
    bar = progress(total=stage.steps, initial=state.stage_step, desc=stage.name, unit="step",
                   disable=not run.main, dynamic_ncols=True, every=cfg.train.log_every)  # fmt: skip
    sr = StageRun(si, stage, data, seed, mining, iter(()), bar)
    sr.batches = _open(run, sr)
    return sr


def _set_caption_vocabulary(run: Run, data: dict[str, StageData]) -> None:
    """A stage that trains the caption decoder sets the tokens it speaks: its own texts' with
    ``train.caption_vocab: corpus``, else every token (a decoder restricted before speaks all again)."""
    cfg, stage, decoder = run.cfg, run.cfg.stages[run.state.stage], run.model.caption
    if decoder is None or (stage.losses.caption <= 0 and stage.losses.qa <= 0):
        return
    where = f"stages.{run.state.stage} ('{stage.name}')"
    if cfg.train.caption_vocab == "corpus" and stage.losses.caption > 0:
        decoder.set_vocabulary(caption_vocabulary(data, run.collator))
        run.accelerator.print(
            f"caption vocabulary: {len(decoder.vocabulary())} of {decoder.vocab_mask.numel():,} tokens, "
            "those of the stage's texts (train.caption_vocab=corpus)"
        )
    elif decoder.vocabulary() is not None:
        decoder.set_vocabulary(None)
        run.accelerator.print(f"caption vocabulary: every token again ({where}, train.caption_vocab=full)")


def train_step(run: Run, sr: StageRun) -> tuple[dict, str, float]:
    """One optimizer step: the learning rate, a fresh mining pass when due, then ``grad_accum``
    micro-batches through the task. Returns the last micro-batch's outputs, its modality and the lr."""
    cfg, accelerator, state, task, optimizer = run.cfg, run.accelerator, run.state, run.task, run.optimizer
    started = time.perf_counter()
    lr = run.lr_at(state.step)
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
    due = state.stage_step > 0 and state.stage_step % sr.stage.mining.every == 0
    if sr.mining and due and state.mined_at != state.stage_step:
        run.neighbours = _mine(run, sr.data, sr.stage)
        sr.batches = _open(run, sr)
    for micro in range(cfg.train.grad_accum):
        asked = time.perf_counter()
        modality, batch = next(sr.batches)
        sr.waited += time.perf_counter() - asked
        state.bad_samples.extend(batch.pop("bad"))
        if "stream" in batch:  # where this lane's shard streams stand now
            where = batch.pop("stream")
            run.streams.setdefault(modality, {})[where["lane"]] = where["positions"]
        batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        rank = accelerator.process_index
        masking = masking_args(sr.stage, modality, cfg.train.seed, state.step, micro, rank)
        with accelerator.accumulate(task):
            out = task(batch, sr.stage.losses, masking=masking)
            _check_finite(accelerator, out, state.step)
            accelerator.backward(out["loss"])
            if accelerator.sync_gradients and cfg.train.grad_clip > 0:
                accelerator.clip_grad_norm_(task.parameters(), cfg.train.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    state.step += 1
    state.stage_step += 1
    sr.stepped += time.perf_counter() - started
    return out, modality, lr


def after_step(
    run: Run, sr: StageRun, out: dict, modality: str, lr: float, stop_after: int | None
) -> tuple[bool, bool]:
    """Log, validate when due, move to the next stage after its last step, save when due. Returns
    (stage done, stop now)."""
    cfg, accelerator, state = run.cfg, run.accelerator, run.state
    logs = {k: float(v.detach()) for k, v in out.items() if torch.is_tensor(v) and v.numel() == 1}
    # data: the share of the step time spent waiting for the batch (since the last log line); a loader
    # that keeps up leaves it near 0 %
    waiting = sr.waited / sr.stepped if sr.stepped > 0 else 0.0
    sr.bar.set_postfix(loss=f"{logs['loss']:.3f}", mod=modality[0], data=f"{waiting:.0%}")
    sr.bar.update(1)
    if state.step % cfg.train.log_every == 0:
        logs["data_wait_share"] = waiting
        accelerator.log({f"train/{k}": v for k, v in logs.items()} | {"train/lr": lr}, step=state.step)
        sr.waited = sr.stepped = 0.0
    last = state.stage_step == sr.stage.steps
    if (cfg.train.eval_every and state.step % cfg.train.eval_every == 0) or last:
        state.metrics = run.validate(accelerator, run.model, cfg, run.tokenizer, sr.stage)
        accelerator.log(state.metrics, step=state.step)
        if run.main and not last:
            sr.bar.write(_summary(state.metrics, f"step {state.step}"))
    if last:  # the checkpoint saved below must resume at the next stage
        state.stage += 1
        state.stage_step = 0
        state.mined_at = -1
        run.neighbours, run.streams, run.streams_known = None, {}, True
    stop = stop_after is not None and state.step >= stop_after
    if (cfg.train.save_every and state.step % cfg.train.save_every == 0) or last or stop:
        _save_state(run)
    return last, stop


def end_stage(run: Run, sr: StageRun) -> None:
    """Close the stage: its summary and the model folder (``train.output_dir/model``)."""
    sr.bar.close()
    run.accelerator.print(_summary(run.state.metrics, f"end of stage '{sr.stage.name}'"))
    if run.main:
        model, folder = run.accelerator.unwrap_model(run.task).model, Path(run.cfg.train.output_dir) / "model"
        save_checkpoint(model, run.cfg, folder, extra_files=run.tokenizer.save_pretrained)
    run.accelerator.wait_for_everyone()


def finish(run: Run) -> dict[str, float]:
    """The test split if configured (retrieval, and zero-shot action recognition where ``eval.
    action_classes`` names the classes; else the last validation), the bad-sample report, the trackers."""
    cfg, accelerator = run.cfg, run.accelerator
    metrics = dict(run.state.metrics)
    if cfg.data.test_manifest:
        test = load_eval_set(cfg.data.test_manifest, cfg)
        frames = cfg.data.num_frames
        metrics = evaluate_retrieval(accelerator, run.model, cfg, test, run.tokenizer, frames, "test")
        if cfg.eval.action_classes:
            classes = read_classes(resolve_manifest(cfg.eval.action_classes, cfg))
            prompts = list(cfg.eval.action_prompts)
            accelerator.print(
                f"zero-shot action on the test split, {len(classes)} classes, prompts {prompts}"
            )
            metrics |= evaluate_action(accelerator, run.model, cfg, run.tokenizer, test, classes, frames,
                                       "test", mode="zero-shot", prompts=prompts)  # fmt: skip
    _report_bad(accelerator, run.state)
    accelerator.end_training()
    return metrics


# ---------------------------------------------------------------------------------------------- helpers


def _open(run: Run, sr: StageRun) -> Iterator:
    """The stage's batches from the current micro-step; shard streams at this process's positions."""
    micro = run.state.stage_step * run.cfg.train.grad_accum  # micro-batches already drawn in this stage
    rank, world = run.accelerator.process_index, run.accelerator.num_processes
    return open_batches(run.cfg, sr.data, sr.stage, run.collator, sr.seed, micro, rank, world,
                        run.neighbours, positions=run.streams if run.streams_known else None)  # fmt: skip


def _streamed(run: Run) -> bool:
    return any(source.shards for stage in run.cfg.stages for source in stage.sources)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete ``save_state`` folder (incomplete ones keep their ``.tmp`` suffix)."""
    root = Path(output_dir) / "checkpoints"
    done = sorted(root.glob("step_*[0-9]"), key=lambda p: int(p.name.split("_")[1])) if root.is_dir() else []
    return done[-1] if done else None


def _save_state(run: Run) -> None:
    cfg, accelerator, state = run.cfg, run.accelerator, run.state
    # The state is written by the main process: every process's stream positions go into it first.
    state.streams = gather_object([run.streams]) if accelerator.num_processes > 1 else [run.streams]
    root = Path(cfg.train.output_dir) / "checkpoints"
    final, tmp = root / f"step_{state.step:08d}", root / f"step_{state.step:08d}.tmp"
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if run.main:
        save_config(cfg, tmp / "config.yaml")
        if run.neighbours is not None:  # so a resumed run draws the same mined batches
            np.save(tmp / NEIGHBOURS_NAME, run.neighbours)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)  # only a fully written folder gets a name that latest_checkpoint accepts
        for old in sorted(root.glob("step_*[0-9]"))[: -cfg.train.keep_checkpoints]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def _load_neighbours(path: Path) -> np.ndarray | None:
    file = Path(path) / NEIGHBOURS_NAME
    return np.load(file) if file.is_file() else None


def _mine(run: Run, data: dict, stage: StageConfig) -> np.ndarray:
    """Embed the stage's training videos with the current model and return each one's neighbours."""
    accelerator = run.accelerator
    emb = embed_for_mining(
        run.model, mining_dataset(data["video"], run.cfg), batch_size=run.cfg.eval.batch_size,
        num_workers=min(run.cfg.data.num_workers, 1), device=accelerator.device,
        dtype=autocast_dtype(accelerator), rank=accelerator.process_index,
        world_size=accelerator.num_processes,
    )  # fmt: skip
    run.state.mined_at = run.state.stage_step
    return nearest_neighbours(emb, stage.mining.k, ivf_threshold=stage.mining.ivf_threshold)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= _flat(v, key + ".")
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def _eval_sets(cfg: Config) -> dict[str, EvalSet]:
    sets = {}
    if cfg.data.val_manifest:
        sets["val/video"] = load_eval_set(cfg.data.val_manifest, cfg)
    if cfg.data.val_image_manifest:
        sets["val/image"] = load_eval_set(cfg.data.val_image_manifest, cfg)
    return sets


def _validate(accelerator, model, cfg, sets, tokenizer, stage) -> dict[str, float]:
    metrics = {}
    for name, samples in sets.items():
        frames = 1 if name.endswith("image") else (stage.num_frames or cfg.data.num_frames)
        metrics |= evaluate_retrieval(accelerator, model, cfg, samples, tokenizer, frames, name)
    return metrics


def _check_finite(accelerator: Accelerator, out: dict, step: int) -> None:
    # Every process must agree to stop, or the healthy ones would hang in the next collective.
    ok = torch.tensor([float(torch.isfinite(out["loss"]).item())], device=accelerator.device)
    if accelerator.gather(ok).min() < 1:
        parts = {k: float(v.detach()) for k, v in out.items() if k.endswith("_loss")}
        raise NonFiniteLossError(
            f"non-finite loss at step {step}: {parts}. Nothing was saved over the last good checkpoint; "
            "lower the learning rate or check the data, then --resume latest."
        )


# The figures a summary line shows, of whichever validation ran: retrieval's ranks, action's top-k,
# the caption loss, and QA's overall accuracy per protocol (not the per-type ones: qa/rank/acc/what).
_HEADLINE = ("R@1", "R@5", "R@10", "MdR", "/top1", "/top5", "/caption_loss", "/acc")


def _summary(metrics: dict[str, float], title: str) -> str:
    keys = [k for k in metrics if k.endswith(_HEADLINE)]
    if not keys:
        return f"{title}: no metrics"
    shown = [f"{k}={metrics[k]:.3f}" if k.endswith("_loss") else f"{k}={metrics[k]:.1f}" for k in keys]
    return f"{title}: " + ", ".join(shown)


def _report_bad(accelerator: Accelerator, state: TrainState) -> None:
    bad = (
        sorted(set(gather_object(list(state.bad_samples))))
        if accelerator.num_processes > 1
        else sorted(set(state.bad_samples))
    )
    if accelerator.is_main_process and bad:
        log.warning(
            "%d unreadable files were skipped and replaced during training, e.g. %s", len(bad), bad[:3]
        )
        accelerator.print(f"{len(bad)} unreadable files were skipped (replaced by other samples): {bad[:10]}")
