"""Text tower: any Hugging Face ``AutoModel`` encoder, pooled into one sentence vector.

Tokenization happens in the data layer; this module sees token ids only.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel

from videovl.config import TEXT_POOLS, ConfigError, TextConfig, not_loaded_error, not_one_of, resolve_path
from videovl.models.layers.decoder import EncoderBlock

__all__ = ["TextEncoder", "TextOutput", "TextAdapter", "OutputMemo", "pool_states"]


class TextOutput(NamedTuple):
    pooled: Tensor  # (B, width) sentence vector
    hidden: Tensor  # (B, L, width) last hidden states, for word-level matching and cross-attention heads
    mask: Tensor  # (B, L) 1 for real tokens


def pool_states(hidden: Tensor, mask: Tensor, pool: str) -> Tensor:
    """(B, L, W) token states -> (B, W): the first token's (``cls``) or the mean over real tokens."""
    if pool == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


class TextAdapter(nn.Module):
    """Trainable self-attention layers over a text tower's token states.

    Over a locked tower (LiT) the sentence vector is otherwise a fixed pool of contextual states and only
    a linear map learns from the data: one that tells "left, then up" from "up, then left" in the training
    captions' wordings need not tell them apart in another wording. Layers over the token states can learn
    which word comes first however the sentence puts it, while the tower stays locked and its outputs are
    still computed once per caption. Each layer starts as the identity (zero output maps), and the
    sentence vector is the tower's plus the mean of the layers' change over the real tokens (for a
    mean-pooled tower, the mean of the new states), so training starts from the tower's own outputs
    whatever its pooling."""

    def __init__(self, width: int, layers: int) -> None:
        super().__init__()
        # heads of about 64 channels: the most that divide the width, at most width // 64
        heads = next(h for h in range(max(1, width // 64), 0, -1) if width % h == 0)
        self.blocks = nn.ModuleList(EncoderBlock(width, heads, zero_init=True) for _ in range(layers))

    def forward(self, out: TextOutput) -> TextOutput:
        hidden = out.hidden
        for block in self.blocks:
            hidden = block(hidden, out.mask)
        pooled = out.pooled + pool_states(hidden - out.hidden, out.mask, "mean")
        return TextOutput(pooled, hidden, out.mask)


class TextEncoder(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        if cfg.pool not in TEXT_POOLS:
            raise not_one_of("model.text.pool", cfg.pool, TEXT_POOLS)
        self.cfg = cfg
        # Whether the weights came from a checkpoint (``model``) rather than a random init (``config``):
        # the optimizer then gives the tower ``train.pretrained_lr_scale``, as any loaded weights.
        self.pretrained = cfg.config is None
        if cfg.config is not None:
            config = dict(cfg.config)
            if "model_type" not in config:
                raise ConfigError(
                    "model.text.config needs a 'model_type' (e.g. 'bert') to build a random encoder"
                )
            self.model = _from_config(AutoConfig.for_model(**config))
        elif cfg.model:
            try:  # never a download: a local folder, or a model already in the Hugging Face cache
                self.model = AutoModel.from_pretrained(resolve_path(cfg.model), local_files_only=True)
            except (OSError, ValueError) as e:  # ValueError: a folder without a config.json model_type
                raise not_loaded_error("model.text.model", cfg.model, str(e)) from e
        else:
            raise ConfigError("model.text needs 'model' (a name or local path) or 'config' (random init)")
        # The pooler is a classification head we never use; left in, its weights would get no gradient.
        if getattr(self.model, "pooler", None) is not None:
            self.model.pooler = None
        self.width = self.model.config.hidden_size
        self.memo: OutputMemo | None = None  # outputs of a locked tower, by caption (remember_outputs)
        if cfg.grad_checkpointing:
            self.set_grad_checkpointing(True)

    def hf_config(self) -> dict:
        """The encoder's own config, stored in checkpoints so they rebuild without the original files."""
        return self.model.config.to_dict()

    def remember_outputs(self, capacity: int) -> None:
        """Compute each distinct caption once while the tower stays locked: a tower with no trainable
        weight, in eval mode, gives a caption the same outputs every step (LiT's locked tower), so they
        are kept, up to ``capacity`` captions (least recently used dropped first). 0 turns it off. Any
        earlier memo is dropped, so call it again after the weights change (a new stage, a resume)."""
        self.memo = OutputMemo(capacity) if capacity > 0 else None

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> TextOutput:
        memo = self.memo
        if memo is None or self.training or any(p.requires_grad for p in self.parameters()):
            return self._forward(input_ids, attention_mask)
        return memo.outputs(input_ids, attention_mask, self._forward)

    def _forward(self, input_ids: Tensor, attention_mask: Tensor) -> TextOutput:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        # the states of the input's tokens: a model that appends tokens of its own (VideoPrism's class
        # token, last) gives them through its pooled output (pool: eot), not as words
        hidden = out.last_hidden_state[:, : input_ids.shape[1]]
        if self.cfg.pool == "eot":
            pooled = getattr(out, "pooler_output", None)
            if pooled is None:
                raise ConfigError(
                    f"model.text.pool is 'eot' but {type(self.model).__name__} has no pooled output; "
                    "use 'mean' or 'cls'"
                )
        else:
            pooled = pool_states(hidden, attention_mask, self.cfg.pool)
        return TextOutput(pooled, hidden, attention_mask)

    forward_features = forward

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        # transformers 5 renamed gradient_* to activation_checkpointing_* and deprecated the old names.
        model = self.model
        if hasattr(model, "activation_checkpointing_enable"):
            if enable:
                model.activation_checkpointing_enable(
                    activation_checkpointing_kwargs={"use_reentrant": False}
                )
            else:
                model.activation_checkpointing_disable()
        elif enable:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_disable()

    def no_weight_decay(self) -> set[str]:
        return {n for n, p in self.named_parameters() if p.ndim < 2 or "embeddings" in n}

    def lock(self, unlocked_layers: int = 0) -> None:
        """Freeze the tower except its last ``unlocked_layers`` transformer layers."""
        for p in self.parameters():
            p.requires_grad_(False)
        if unlocked_layers <= 0:
            return
        layers = _layer_list(self.model)
        for layer in layers[-unlocked_layers:]:
            for p in layer.parameters():
                p.requires_grad_(True)


class OutputMemo:
    """A locked text tower's outputs by caption: its token ids, the width of the batch it came padded to
    (a tower may pool a padding position: SigLIP's last token) and the autocast dtype. Rows seen before are
    read back. The rest run at the batch's width in groups of one caption length each, so a row's
    outputs do not depend on which other captions first shared its batch: a run that fills the memo in
    another order (a resumed one) reads the same values, and they are the values of running the tower on
    the whole batch (a row's padding is the same)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.rows: OrderedDict[tuple, tuple[Tensor, Tensor] | None] = OrderedDict()
        self.hits = self.misses = 0

    def outputs(self, input_ids: Tensor, attention_mask: Tensor, compute) -> TextOutput:
        device = input_ids.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        lengths = attention_mask.sum(1)
        if not bool((attention_mask.cumprod(1).sum(1) == lengths).all()):  # padded on the left
            return compute(input_ids, attention_mask)
        lengths = lengths.tolist()  # right padding: a caption is its first `length` ids
        width = input_ids.shape[1]
        keys = [(dtype, width, *ids[:n]) for ids, n in zip(input_ids.tolist(), lengths)]
        missing = [i for i, k in enumerate(keys) if k not in self.rows]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        by_length: dict[int, list[int]] = {}
        for i in missing:
            if keys[i] not in self.rows:  # a caption twice in one batch runs once
                by_length.setdefault(lengths[i], []).append(i)
                self.rows[keys[i]] = None
        for length, group in by_length.items():
            new = compute(input_ids[group], attention_mask[group])
            for j, i in enumerate(group):
                self.rows[keys[i]] = (new.pooled[j].detach().clone(), new.hidden[j, :length].detach().clone())
        rows = [self.rows[k] for k in keys]
        for k in keys:
            self.rows.move_to_end(k)
        while len(self.rows) > self.capacity:
            self.rows.popitem(last=False)
        pooled = torch.stack([p for p, _ in rows])
        hidden = pooled.new_zeros(len(rows), input_ids.shape[1], pooled.shape[-1])
        for i, (_, h) in enumerate(rows):
            hidden[i, : h.shape[0]] = h
        return TextOutput(pooled, hidden, attention_mask)


def _from_config(config) -> nn.Module:
    """A random model of ``config``: AutoModel's, or for a tower config AutoModel does not map (SigLIP's
    ``SiglipTextConfig``, VideoPrism's ``VideoPrismTextConfig``) the class transformers names after it
    (``SiglipTextModel``, ``VideoPrismTextModel``)."""
    try:
        return AutoModel.from_config(config)
    except ValueError:
        import transformers

        name = type(config).__name__.removesuffix("Config") + "Model"
        cls = getattr(transformers, name, None)
        if cls is None:
            raise ConfigError(
                f"model.text.config: transformers has no model for model_type '{config.model_type}' "
                f"(neither AutoModel nor {name})"
            ) from None
        return cls(config)


def _layer_list(model: nn.Module) -> nn.ModuleList:
    # Encoders in transformers keep their blocks in the longest ModuleList; find it rather than
    # guessing per-architecture attribute names.
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise ConfigError(f"cannot find the layers of {type(model).__name__} to unlock")
    return max(lists, key=len)
