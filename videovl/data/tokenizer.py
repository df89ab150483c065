"""Tokenizer loading: text becomes ids here, in the data layer, never inside a model."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from videovl.config import ConfigError, TextConfig, not_loaded_error, resolve_path

__all__ = ["load_tokenizer", "fill_token_ids", "decode", "TextTokenizer"]


def load_tokenizer(cfg: TextConfig) -> PreTrainedTokenizerBase:
    source = cfg.tokenizer or cfg.model
    if not source:
        raise ConfigError(
            "model.text.tokenizer is required when the text encoder is built from a config alone"
        )
    try:  # never a download: a local folder, or a tokenizer already in the Hugging Face cache
        return AutoTokenizer.from_pretrained(resolve_path(source), local_files_only=True)
    except (OSError, ValueError) as e:  # ValueError: a folder without a config.json model_type
        field = "model.text.tokenizer" if cfg.tokenizer else "model.text.model"
        raise not_loaded_error(field, source, str(e), what="tokenizer files") from e


def fill_token_ids(cfg: TextConfig, tokenizer: PreTrainedTokenizerBase) -> TextConfig:
    """Record the ids the caption decoder needs (begin, end, pad, vocabulary size) in the config.

    BERT-style tokenizers frame a sentence as [CLS] ... [SEP]: those serve as begin and end. A tokenizer
    without either (VideoPrism's T5 one has no begin token) leaves that id None: only a caption decoder
    needs it, and the model says so when it is built with one.
    """
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    cfg.vocab_size = len(tokenizer)
    cfg.bos_token_id, cfg.eos_token_id = bos, eos
    cfg.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return cfg


def decode(tokenizer: PreTrainedTokenizerBase, ids) -> list[str]:
    return [s.strip() for s in tokenizer.batch_decode(ids, skip_special_tokens=True)]


class TextTokenizer:
    """Callable text -> the token tensors the text encoder takes: ``{"input_ids", "attention_mask"}``, long
    (B, L), padded to the longest text and truncated at ``max_length`` tokens, as training and evaluation
    tokenize. A single string is a batch of one. ``tokenizer`` is the transformers tokenizer underneath
    (for decoding, or its vocabulary)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, texts: str | Sequence[str]) -> dict[str, Tensor]:
        batch = [texts] if isinstance(texts, str) else list(texts)
        if not batch or not all(isinstance(t, str) for t in batch):
            raise TypeError(f"texts must be a string or a non-empty list of strings, got {texts!r:.80}")
        tokens = self.tokenizer(
            batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}

    def __repr__(self) -> str:
        return f"TextTokenizer({self.tokenizer.name_or_path!r}, max_length={self.max_length})"
