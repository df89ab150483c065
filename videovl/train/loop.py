"""The pretraining loop: Accelerate end to end, stage after stage, resumable at any saved step."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from videovl.config import Config, save_config, to_dict
from videovl.data.collate import Collator
from videovl.data.corpora.demo import generate_demo
from videovl.data.tokenizer import fill_token_ids, load_tokenizer
from videovl.eval.benchmarks import EvalSet
from videovl.models.checkpoint import save_checkpoint
from videovl.models.factory import create_model, model_config
from videovl.models.model import VideoLanguageModel
from videovl.progress import progress
from videovl.tasks.pretrain import PretrainTask
from videovl.train.checks import check_run
from videovl.train.data import build_stage_data, open_batches
from videovl.train.evaluation import autocast_dtype, evaluate_retrieval, load_eval_set
from videovl.train.mining import embed_for_mining, mining_dataset, nearest_neighbours
from videovl.train.optim import build_optimizer, describe_groups
from videovl.train.schedule import StagedSchedule
from videovl.train.stages import apply_freeze, masking_args
from videovl.train.state import TrainState

__all__ = ["pretrain", "NonFiniteLossError", "latest_checkpoint", "Validator"]

Validator = Callable[..., dict[str, float]]

log = logging.getLogger(__name__)

NEIGHBOURS_NAME = "neighbours.npy"


class NonFiniteLossError(RuntimeError):
    pass


# ----------------------------------------------------------------------------------------- checkpoints


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete ``save_state`` folder (incomplete ones keep their ``.tmp`` suffix)."""
    root = Path(output_dir) / "checkpoints"
    done = sorted(root.glob("step_*[0-9]"), key=lambda p: int(p.name.split("_")[1])) if root.is_dir() else []
    return done[-1] if done else None


def _save_state(accelerator: Accelerator, cfg: Config, step: int, neighbours: np.ndarray | None) -> None:
    root = Path(cfg.train.output_dir) / "checkpoints"
    final, tmp = root / f"step_{step:08d}", root / f"step_{step:08d}.tmp"
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_config(cfg, tmp / "config.yaml")
        if neighbours is not None:  # so a resumed run draws the same mined batches
            np.save(tmp / NEIGHBOURS_NAME, neighbours)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)  # only a fully written folder gets a name that latest_checkpoint accepts
        for old in sorted(root.glob("step_*[0-9]"))[: -cfg.train.keep_checkpoints]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def _load_neighbours(path: Path) -> np.ndarray | None:
    file = Path(path) / NEIGHBOURS_NAME
    return np.load(file) if file.is_file() else None


# ------------------------------------------------------------------------------------------------ mining


def _mine(accelerator, model, cfg: Config, data: dict, stage, state: TrainState) -> np.ndarray:
    """Embed the stage's training videos with the current model and return each one's neighbours."""
    emb = embed_for_mining(
        model, mining_dataset(data["video"], cfg), batch_size=cfg.eval.batch_size,
        num_workers=min(cfg.data.num_workers, 1), device=accelerator.device,
        dtype=autocast_dtype(accelerator), rank=accelerator.process_index,
        world_size=accelerator.num_processes,
    )  # fmt: skip
    state.mined_at = state.stage_step
    return nearest_neighbours(emb, stage.mining.k, ivf_threshold=stage.mining.ivf_threshold)


# ----------------------------------------------------------------------------------------------- loop


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= _flat(v, key + ".")
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def pretrain(
    cfg: Config,
    accelerator: Accelerator,
    resume: str | None = None,
    stop_after: int | None = None,
    *,
    model: VideoLanguageModel | None = None,
    make_task: Callable[[VideoLanguageModel, int, int], nn.Module] = PretrainTask,
    validate: Validator | None = None,
) -> dict[str, float]:
    """Run every stage of ``cfg``; returns the final metrics (test split if configured, else validation).

    ``stop_after``: save a checkpoint and return after this many optimizer steps of the whole run (for
    time-limited jobs; ``--resume latest`` continues exactly where it stopped). ``resume``: a checkpoint
    folder, "latest" (an error if there is none) or "auto" (the latest if there is one, else a fresh
    start). Fine-tuning passes a loaded ``model``, its own ``make_task(model, rank, world_size)`` (a
    module whose forward takes ``(batch, loss_weights, masking=None)`` and returns ``{"loss", ...}``) and
    ``validate(accelerator, model, cfg, tokenizer, stage) -> metrics`` (default: retrieval on the
    configured validation manifests).
    """
    out_dir = Path(cfg.train.output_dir)
    main = accelerator.is_main_process
    if cfg.data.demo:
        if main:
            generate_demo(cfg.data.demo_root, seed=cfg.data.demo_seed)
        accelerator.wait_for_everyone()
    if model is None:  # a pretrained checkpoint fixes the towers and the tokenizer before anything loads
        cfg.model = model_config(cfg.model)
    tokenizer = load_tokenizer(cfg.model.text)
    fill_token_ids(cfg.model.text, tokenizer)
    model = model if model is not None else create_model(cfg.model)
    sources = check_run(cfg, model)  # every stage, before anything is written or trained
    if main:
        save_config(cfg, out_dir / "config.yaml")
    task = make_task(model, accelerator.process_index, accelerator.num_processes)
    t = cfg.train
    optimizer = build_optimizer(model, t.weight_decay, t.betas, t.text_lr_scale, t.pretrained_lr_scale)
    accelerator.print("optimizer groups:\n" + describe_groups(optimizer.param_groups))
    if main:  # which parameter went where, in full
        groups_file = out_dir / "optimizer_groups.txt"
        groups_file.write_text(describe_groups(optimizer.param_groups, full=True) + "\n")
    task, optimizer = accelerator.prepare(task, optimizer)
    accelerator.print(
        f"training on {accelerator.num_processes} processes ({accelerator.device}), "
        f"mixed precision: {accelerator.mixed_precision}"
    )
    state = TrainState()
    accelerator.register_for_checkpointing(state)
    resume_path = None
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
    if path is not None:
        accelerator.load_state(str(path))
        resume_path = path
        accelerator.print(f"resumed from {path}: stage {state.stage}, step {state.step}")
    if cfg.train.tracker:
        accelerator.init_trackers("videovl", config=_flat(to_dict(cfg)))
    lr_at = StagedSchedule(cfg.stages)
    collator = Collator(tokenizer, cfg.model.text.max_length)
    if validate is None:
        val = _eval_sets(cfg)
        validate = lambda acc, m, c, tok, stage: _validate(acc, m, c, val, tok, stage)  # noqa: E731
    accum = cfg.train.grad_accum
    rank, world = accelerator.process_index, accelerator.num_processes
    neighbours = _load_neighbours(resume_path) if resume_path is not None else None
    while state.stage < len(cfg.stages):
        si, stage = state.stage, cfg.stages[state.stage]
        if stage.steps == 0:  # `stages.N.steps=0` on the command line leaves a stage out of a run
            accelerator.print(f"stage {si} '{stage.name}': 0 steps, skipped")
            state.stage += 1
            continue
        counts = apply_freeze(model, stage.freeze, stage.text_unlocked_layers)
        accelerator.print(
            f"stage {si} '{stage.name}': {stage.steps} steps, {counts['trainable']:,} trainable "
            f"parameters ({counts['frozen']:,} frozen)"
        )
        data = build_stage_data(cfg, si, sources[si])
        micro0 = state.stage_step * accum  # micro-batches already drawn in this stage
        seed = cfg.train.seed + 1000 * si
        mining = stage.mining.enabled and "video" in data
        if mining and (neighbours is None or state.mined_at < 0):
            neighbours = _mine(accelerator, model, cfg, data, stage, state)
        batches = open_batches(cfg, data, stage, collator, seed, micro0, rank, world, neighbours)
        bar = progress(
            total=stage.steps,
            initial=state.stage_step,
            desc=stage.name,
            unit="step",
            disable=not main,
            dynamic_ncols=True,
            every=cfg.train.log_every,
        )
        while state.stage_step < stage.steps:
            lr = lr_at(state.step)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            if (
                mining
                and state.stage_step > 0
                and state.stage_step % stage.mining.every == 0
                and state.mined_at != state.stage_step
            ):
                neighbours = _mine(accelerator, model, cfg, data, stage, state)
                batches = open_batches(
                    cfg, data, stage, collator, seed, state.stage_step * accum, rank, world, neighbours
                )
            for micro in range(accum):
                modality, batch = next(batches)
                state.bad_samples.extend(batch.pop("bad"))
                batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                masking = masking_args(stage, modality, cfg.train.seed, state.step, micro, rank)
                with accelerator.accumulate(task):
                    out = task(batch, stage.losses, masking=masking)
                    _check_finite(accelerator, out, state.step)
                    accelerator.backward(out["loss"])
                    if accelerator.sync_gradients and cfg.train.grad_clip > 0:
                        accelerator.clip_grad_norm_(task.parameters(), cfg.train.grad_clip)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.stage_step += 1
            logs = {k: float(v.detach()) for k, v in out.items() if torch.is_tensor(v) and v.numel() == 1}
            bar.set_postfix(loss=f"{logs['loss']:.3f}", mod=modality[0])
            bar.update(1)
            if state.step % cfg.train.log_every == 0:
                accelerator.log(
                    {f"train/{k}": v for k, v in logs.items()} | {"train/lr": lr}, step=state.step
                )
            last = state.stage_step == stage.steps
            if (cfg.train.eval_every and state.step % cfg.train.eval_every == 0) or last:
                state.metrics = validate(accelerator, model, cfg, tokenizer, stage)
                accelerator.log(state.metrics, step=state.step)
                if main and not last:
                    bar.write(_summary(state.metrics, f"step {state.step}"))
            if last:  # the checkpoint saved below must resume at the next stage
                state.stage += 1
                state.stage_step = 0
                state.mined_at = -1
                neighbours = None
            stop = stop_after is not None and state.step >= stop_after
            if (cfg.train.save_every and state.step % cfg.train.save_every == 0) or last or stop:
                _save_state(accelerator, cfg, state.step, neighbours)
            if stop:
                accelerator.print(f"stopped after step {state.step}; continue with --resume latest")
                accelerator.end_training()
                return dict(state.metrics)
            if last:
                break
        bar.close()
        accelerator.print(_summary(state.metrics, f"end of stage '{stage.name}'"))
        if main:
            save_checkpoint(
                accelerator.unwrap_model(task).model,
                cfg,
                out_dir / "model",
                extra_files=tokenizer.save_pretrained,
            )
        accelerator.wait_for_everyone()

    metrics = dict(state.metrics)
    if cfg.data.test_manifest:
        test = load_eval_set(cfg.data.test_manifest, cfg)
        metrics = evaluate_retrieval(accelerator, model, cfg, test, tokenizer, cfg.data.num_frames, "test")
    _report_bad(accelerator, state)
    accelerator.end_training()
    return metrics


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


def _summary(metrics: dict[str, float], title: str) -> str:
    keys = [k for k in metrics if k.endswith(("R@1", "R@5", "R@10", "MdR"))]
    return f"{title}: " + ", ".join(f"{k}={metrics[k]:.1f}" for k in keys) if keys else f"{title}: no metrics"


def _report_bad(accelerator: Accelerator, state: TrainState) -> None:
    from accelerate.utils import gather_object

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
