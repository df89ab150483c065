"""Caption decoder: a causal text decoder with cross-attention to the visual tokens, and generation.

Token ids follow the BERT WordPiece layout of the data layer: ``[CLS] w1 ... wn [SEP] [PAD] ...`` with
[CLS] as the start (``bos_id``) and [SEP] as the end token (``eos_id``). ``forward`` returns logits where
position i predicts token i + 1; the loss shifts them. Decoding ids to text is the caller's job.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from videovl.config import CaptionConfig
from videovl.models.layers.decoder import DecoderBlock, init_weights

__all__ = ["CaptionDecoder", "target_positions"]


def target_positions(attention_mask: Tensor) -> Tensor:
    """(B, L) bool: the positions whose next token is real, i.e. whose logits teacher forcing scores."""
    return F.pad(attention_mask[:, 1:].bool(), (0, 1))


def _drop_tied_head(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    state_dict.pop(prefix + "lm_head.weight", None)


def _fill_vocab_mask(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Checkpoints saved before the decoder kept its vocabulary speak every token."""
    state_dict.setdefault(prefix + "vocab_mask", torch.ones_like(module.vocab_mask))


def _refresh_vocabulary(module: nn.Module, incompatible_keys) -> None:
    module.set_vocabulary_mask(module.vocab_mask)


def _fill_tied_head(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Both names load the one tensor; files that kept the head's name instead of the embedding's (videovl
    checkpoints saved before the hook above) load as well."""
    embed, head = prefix + "token_embed.weight", prefix + "lm_head.weight"
    if embed not in state_dict and head in state_dict:
        state_dict[embed] = state_dict[head]
    if embed in state_dict:
        state_dict[head] = state_dict[embed]


class CaptionDecoder(nn.Module):
    def __init__(
        self, cfg: CaptionConfig, vocab_size: int, visual_width: int, bos_id: int, eos_id: int, pad_id: int
    ) -> None:
        super().__init__()
        for name, value in (("bos_id", bos_id), ("eos_id", eos_id), ("pad_id", pad_id)):
            if not 0 <= value < vocab_size:
                raise ValueError(
                    f"{name}={value} is outside the vocabulary [0, {vocab_size}); check the tokenizer"
                )
        self.cfg = cfg
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self.token_embed = nn.Embedding(vocab_size, cfg.width)
        self.pos_embed = nn.Parameter(torch.zeros(cfg.max_length, cfg.width))
        self.visual_proj = nn.Linear(visual_width, cfg.width)
        blocks = (DecoderBlock(cfg.width, cfg.heads, causal=True) for _ in range(cfg.depth))
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(cfg.width)
        self.lm_head = nn.Linear(cfg.width, vocab_size)
        # The tokens the decoder speaks (train.caption_vocab: corpus keeps those of its training texts): the
        # mask travels with the weights; ``vocab_ids`` is the same as sorted ids (None: every token).
        self.register_buffer("vocab_mask", torch.ones(vocab_size, dtype=torch.bool))
        self.register_buffer("vocab_ids", None, persistent=False)
        self.register_load_state_dict_pre_hook(_fill_vocab_mask)
        self.register_load_state_dict_post_hook(_refresh_vocabulary)
        self.apply(init_weights)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.token_embed.weight
            # A tied tensor is written once, under the embedding's name: a state dict holding it twice makes
            # every safetensors save (Accelerate's save_state included) drop one copy with a warning.
            self.register_state_dict_post_hook(_drop_tied_head)
            self.register_load_state_dict_pre_hook(_fill_tied_head)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}

    def set_vocabulary(self, token_ids: Tensor | None) -> None:
        """Speak only ``token_ids`` (with the start and end tokens) from now on; None: every token."""
        mask = torch.ones_like(self.vocab_mask)
        if token_ids is not None:
            token_ids = torch.as_tensor(token_ids, dtype=torch.long, device=mask.device).flatten()
            size = mask.numel()
            if token_ids.numel() and not (int(token_ids.min()) >= 0 and int(token_ids.max()) < size):
                raise ValueError(f"vocabulary token ids must lie in [0, {size}), got {token_ids.min()}-"
                                 f"{token_ids.max()}")  # fmt: skip
            mask = torch.zeros_like(mask)
            mask[token_ids] = True
            mask[[self.bos_id, self.eos_id]] = True
        self.set_vocabulary_mask(mask)

    def set_vocabulary_mask(self, mask: Tensor) -> None:
        self.vocab_mask.copy_(mask)
        self.vocab_ids = None if bool(mask.all()) else mask.nonzero().flatten()

    def vocabulary(self) -> Tensor | None:
        """The sorted token ids the decoder speaks, or None for the whole vocabulary."""
        return self.vocab_ids

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        visual_tokens: Tensor,
        positions: Tensor | None = None,
        vocabulary: Tensor | None = None,
    ) -> Tensor:
        """``input_ids`` (B, L), ``attention_mask`` (B, L), ``visual_tokens`` (B, N, Wv) -> (B, L, V).

        ``positions`` (B, L) bool: only those positions go through the vocabulary projection, and the
        logits come back packed, (R, V) in row-major order. Training passes the positions whose next token
        is real (:func:`target_positions`): with a 30k vocabulary the projection of padding was a large
        share of a demo step. ``vocabulary`` (K,) sorted token ids: logits over those tokens only, (..., K)
        (:meth:`vocabulary`; the loss maps its targets with ``caption_loss(..., vocabulary=...)``)."""
        memory = self.visual_proj(visual_tokens)
        return self.decode(input_ids, attention_mask, memory, positions=positions, vocabulary=vocabulary)

    def decode(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        memory: Tensor,
        memory_mask: Tensor | None = None,
        positions: Tensor | None = None,
        vocabulary: Tensor | None = None,
    ) -> Tensor:
        """As :meth:`forward`, cross-attending to ``memory`` (B, N, W), a sequence already at the decoder's
        width (``visual_proj`` of the visual tokens, or anything else the caller conditions on), of which
        ``memory_mask`` (B, N) marks the real entries (None: all)."""
        hidden = self._hidden(input_ids, attention_mask, memory, memory_mask)
        hidden = hidden if positions is None else hidden[positions]
        if vocabulary is None:
            return self.lm_head(hidden)
        bias = None if self.lm_head.bias is None else self.lm_head.bias[vocabulary]
        return F.linear(hidden, self.lm_head.weight[vocabulary], bias)

    def _hidden(self, ids: Tensor, mask: Tensor | None, memory: Tensor, memory_mask: Tensor | None) -> Tensor:
        length = ids.shape[1]
        if length > self.cfg.max_length:
            raise ValueError(
                f"caption of {length} tokens exceeds model.caption.max_length={self.cfg.max_length}; "
                "truncate captions in the data layer or raise the max_length"
            )
        x = self.token_embed(ids) + self.pos_embed[:length]  # (B, L, W)
        for block in self.blocks:
            x = block(x, memory, mask, memory_mask)
        return self.norm(x)

    def next_token_logits(self, prefix: Tensor, memory: Tensor, memory_mask: Tensor | None = None) -> Tensor:
        """Logits (B, V) for the token after ``prefix`` (B, L); ``memory`` (B, N, W) is the projected visual
        tokens (or another memory, see :meth:`decode`). The whole prefix is recomputed (no cache): captions
        are short. Tokens outside the decoder's vocabulary (:meth:`set_vocabulary`) get -inf."""
        logits = self.lm_head(self._hidden(prefix, None, memory, memory_mask)[:, -1])
        if self.vocab_ids is not None:
            logits = logits.masked_fill(~self.vocab_mask, float("-inf"))
        return logits

    @torch.no_grad()
    def generate(
        self,
        visual_tokens: Tensor,
        max_length: int | None = None,
        num_beams: int = 1,
        length_penalty: float = 1.0,
    ) -> Tensor:
        """Captions for ``visual_tokens`` (B, N, Wv) as ids (B, L <= max_length), bos first, pad after eos.

        Greedy when ``num_beams == 1``. Beam search ranks finished hypotheses by
        ``sum log p / length ** length_penalty`` (length counts the tokens after bos, eos included);
        ``length_penalty=0`` ranks by total log-probability.
        """
        return self.generate_from_memory(
            self.visual_proj(visual_tokens), None, max_length, num_beams, length_penalty
        )

    @torch.no_grad()
    def generate_from_memory(
        self,
        memory: Tensor,
        memory_mask: Tensor | None = None,
        max_length: int | None = None,
        num_beams: int = 1,
        length_penalty: float = 1.0,
    ) -> Tensor:
        """As :meth:`generate`, conditioned on ``memory`` (B, N, W) at the decoder's width with its
        ``memory_mask`` (B, N) (see :meth:`decode`)."""
        max_length = self.cfg.max_length if max_length is None else max_length
        if not 2 <= max_length <= self.cfg.max_length:
            raise ValueError(
                f"generation max_length={max_length} must be in [2, {self.cfg.max_length}]: bos plus at "
                "least one token, at most the decoder's positions (model.caption.max_length)"
            )
        vocab = self.lm_head.out_features if self.vocab_ids is None else len(self.vocab_ids)
        if not 1 <= num_beams <= vocab // 2:
            raise ValueError(f"num_beams={num_beams} must be in [1, {vocab // 2}] (half the vocabulary)")
        if num_beams == 1:
            return self._greedy(memory, memory_mask, max_length)
        return self._beam_search(memory, memory_mask, max_length, num_beams, length_penalty)

    def _greedy(self, memory: Tensor, memory_mask: Tensor | None, max_length: int) -> Tensor:
        seqs = torch.full((memory.shape[0], 1), self.bos_id, dtype=torch.long, device=memory.device)
        done = torch.zeros(memory.shape[0], dtype=torch.bool, device=memory.device)
        while seqs.shape[1] < max_length and not done.all():
            token = (
                self.next_token_logits(seqs, memory, memory_mask).argmax(-1).masked_fill(done, self.pad_id)
            )  # (B,)
            seqs = torch.cat([seqs, token[:, None]], 1)
            done |= token == self.eos_id
        return seqs

    def _beam_search(
        self, memory: Tensor, memory_mask: Tensor | None, max_length: int, beams: int, length_penalty: float
    ) -> Tensor:
        """Per-sample beams of width ``beams``; the B * beams live hypotheses run as one batch."""
        batch, device = memory.shape[0], memory.device
        memory = memory.repeat_interleave(beams, 0)  # (B * K, N, W), row b * K + k is beam k of sample b
        if memory_mask is not None:
            memory_mask = memory_mask.repeat_interleave(beams, 0)
        seqs = torch.full((batch * beams, 1), self.bos_id, dtype=torch.long, device=device)
        # All beams start as the same [bos]; expanding only the first avoids K copies of every hypothesis.
        scores = torch.full((batch, beams), float("-inf"), device=device)
        scores[:, 0] = 0.0
        finished: list[list[tuple[float, Tensor]]] = [[] for _ in range(batch)]  # (normalised score, ids)
        done = [False] * batch

        def normalise(raw: float, length: int) -> float:
            return raw / length**length_penalty

        def bound(live_raw: float, length: int) -> float:
            # The best normalised score a continuation of a live beam can still reach: log-probabilities
            # only lower the raw score, so it is at the longest length for a positive penalty, else now.
            return normalise(live_raw, max_length - 1 if length_penalty > 0 else length)

        for length in range(1, max_length):  # tokens after bos once this step's token is appended
            logp = F.log_softmax(self.next_token_logits(seqs, memory, memory_mask).float(), -1)  # (B * K, V)
            vocab = logp.shape[1]
            total = (scores.view(-1, 1) + logp).view(batch, beams * vocab)
            # 2K candidates: at most K of them end in eos (one per beam), so K live ones always remain.
            top, index = total.topk(2 * beams, dim=1)  # (B, 2K)
            source, token = index // vocab, index % vocab
            rows: list[int] = []  # the beam each next hypothesis extends, as a row of seqs
            tokens: list[int] = []
            raws: list[float] = []
            old_scores = scores.tolist()
            for b, candidates in enumerate(zip(top.tolist(), source.tolist(), token.tolist(), strict=True)):
                if done[b]:  # finished samples idle along: same rows, pad tokens, scores unchanged
                    rows += range(b * beams, (b + 1) * beams)
                    tokens += [self.pad_id] * beams
                    raws += old_scores[b]
                    continue
                live = []
                for rank, (s, k, t) in enumerate(zip(*candidates, strict=True)):
                    if t != self.eos_id:
                        live.append((b * beams + k, t, s))
                    elif rank < beams:  # only an ending that would have ranked among the K live beams
                        ids = torch.cat([seqs[b * beams + k], seqs.new_tensor([t])])
                        finished[b].append((normalise(s, length), ids))
                live_rows, live_tokens, live_raws = zip(*live[:beams], strict=True)
                rows += live_rows
                tokens += live_tokens
                raws += live_raws
                done[b] = bool(finished[b]) and max(f[0] for f in finished[b]) >= bound(
                    max(live_raws), length
                )
            seqs = torch.cat([seqs[rows], seqs.new_tensor(tokens)[:, None]], 1)
            scores = torch.tensor(raws, device=device).view(batch, beams)
            if all(done):
                break
        for b, row_scores in enumerate(scores.tolist()):  # hypotheses that reached the length limit
            if not done[b]:
                length = seqs.shape[1] - 1
                finished[b] += [
                    (normalise(raw, length), seqs[b * beams + k]) for k, raw in enumerate(row_scores)
                ]
        best = [max(f, key=lambda item: item[0])[1] for f in finished]
        return nn.utils.rnn.pad_sequence(best, batch_first=True, padding_value=self.pad_id)
