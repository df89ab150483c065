"""Text tower: any Hugging Face ``AutoModel`` encoder, pooled into one sentence vector.

Tokenization happens in the data layer; this module sees token ids only.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn
from transformers import AutoConfig, AutoModel

from videovl.config import TEXT_POOLS, ConfigError, TextConfig, not_loaded_error, not_one_of, resolve_path

__all__ = ["TextEncoder", "TextOutput"]


class TextOutput(NamedTuple):
    pooled: Tensor  # (B, width) sentence vector
    hidden: Tensor  # (B, L, width) last hidden states, for word-level matching and cross-attention heads
    mask: Tensor  # (B, L) 1 for real tokens


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
        elif self.cfg.pool == "cls":
            pooled = hidden[:, 0]
        else:
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
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


def _from_config(config) -> nn.Module:
    """A random model of ``config``: AutoModel's, or for a tower config AutoModel does not map (SigLIP's
    ``SiglipTextConfig``) the class transformers names after it (``SiglipTextModel``)."""
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
