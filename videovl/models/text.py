"""Text tower: any Hugging Face ``AutoModel`` encoder, pooled into one sentence vector.

Tokenization happens in the data layer; this module sees token ids only.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel

from videovl.config import ConfigError, TextConfig, resolve_path
from videovl.models.layers.decoder import DecoderBlock, init_weights

__all__ = ["TextEncoder", "TextHead", "TextOutput", "POOLS", "pool_tokens"]

# "eot": the model's own pooled output; for CLIP's text model, the end-of-text token's final state, found
# as transformers finds it.
POOLS = ("mean", "cls", "eot")


class TextOutput(NamedTuple):
    pooled: Tensor  # (B, width) sentence vector
    hidden: Tensor  # (B, L, width) last hidden states, for word-level matching and cross-attention heads
    mask: Tensor  # (B, L) 1 for real tokens


class TextEncoder(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        if cfg.pool not in POOLS:
            raise ConfigError(f"model.text.pool is '{cfg.pool}'; expected one of {POOLS}")
        self.cfg = cfg
        if cfg.config is not None:
            config = dict(cfg.config)
            if "model_type" not in config:
                raise ConfigError(
                    "model.text.config needs a 'model_type' (e.g. 'bert') to build a random encoder"
                )
            self.model = AutoModel.from_config(AutoConfig.for_model(**config))
        elif cfg.model:
            try:  # never a download: a local folder, or a model already in the Hugging Face cache
                self.model = AutoModel.from_pretrained(resolve_path(cfg.model), local_files_only=True)
            except OSError as e:
                raise ConfigError(
                    f"model.text.model '{cfg.model}' is not a local folder (nor in the Hugging Face cache); "
                    "videovl never downloads: fetch it once (`hf download NAME --local-dir DIR`) and pass "
                    f"the folder ({e})"
                ) from e
        else:
            raise ConfigError("model.text needs 'model' (a name or local path) or 'config' (random init)")
        # The pooler is a classification head we never use; left in, its weights would get no gradient.
        if getattr(self.model, "pooler", None) is not None:
            self.model.pooler = None
        self.width = self.model.config.hidden_size
        if cfg.grad_checkpointing:
            self.set_grad_checkpointing(True)

    def hf_config(self) -> dict:
        """The encoder's own config, stored in checkpoints so they rebuild without the original files."""
        return self.model.config.to_dict()

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> TextOutput:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        hidden = out.last_hidden_state
        if self.cfg.pool == "eot":
            pooled = getattr(out, "pooler_output", None)
            if pooled is None:
                raise ConfigError(
                    f"model.text.pool is 'eot' but {type(self.model).__name__} has no pooled output; "
                    "use 'mean' or 'cls'"
                )
        else:
            pooled = pool_tokens(hidden, attention_mask, self.cfg.pool)
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


def pool_tokens(hidden: Tensor, mask: Tensor, how: str) -> Tensor:
    """(B, L, W) token states -> (B, W): the first token's (``cls``) or the mean of the real ones."""
    if how == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


class TextHead(nn.Module):
    """New self-attention layers over a text tower's token states, with their own learned positions.

    A pretrained sentence encoder pools its tokens into a vector that barely changes when two words swap
    ("moves left, then up" and "... up, then left" are at cosine 0.988 in MiniLM), and a locked tower
    cannot learn otherwise. The head is trained while the tower stays locked: its position embeddings
    are added to the token states and its layers can mix words by where they stand. Every layer's output
    projections start at zero, so a new head passes the tower's states on unchanged, plus positions.
    """

    def __init__(self, width: int, depth: int, max_length: int, pool: str) -> None:
        super().__init__()
        if pool not in ("mean", "cls"):
            raise ConfigError(
                f"model.text.head_layers needs model.text.pool 'mean' or 'cls' (the head pools its own "
                f"output), not '{pool}'"
            )
        heads = max(1, width // 64)
        if width % heads:
            raise ConfigError(f"model.text.head_layers: text width {width} is not divisible by {heads} heads")
        self.pool = pool
        self.pos_embed = nn.Parameter(torch.zeros(1, max_length, width))
        self.blocks = nn.ModuleList(DecoderBlock(width, heads, cross_attention=False) for _ in range(depth))
        self.apply(init_weights)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for blk in self.blocks:
            for out in (blk.self_attn.proj, blk.mlp[-1]):
                nn.init.zeros_(out.weight)
                nn.init.zeros_(out.bias)

    def forward(self, hidden: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Token states (B, L, W) and mask (B, L) -> new token states (B, L, W) and their pooled (B, W)."""
        length = hidden.shape[1]
        if length > self.pos_embed.shape[1]:
            raise ValueError(
                f"text of {length} tokens is longer than the text head's {self.pos_embed.shape[1]} positions "
                "(model.text.max_length)"
            )
        x = hidden + self.pos_embed[:, :length].to(hidden.dtype)
        for blk in self.blocks:
            x = blk(x, None, mask)
        return x, pool_tokens(x, mask, self.pool)

    def no_weight_decay(self) -> set[str]:
        return {n for n, p in self.named_parameters() if p.ndim < 2 or n == "pos_embed"}


def _layer_list(model: nn.Module) -> nn.ModuleList:
    # Encoders in transformers keep their blocks in the longest ModuleList; find it rather than
    # guessing per-architecture attribute names.
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise ConfigError(f"cannot find the layers of {type(model).__name__} to unlock")
    return max(lists, key=len)
