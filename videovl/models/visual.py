"""The visual encoder: one space-time ViT for videos (B, C, T, H, W) and images (B, C, H, W).

Images and videos share every weight. An image is lifted, in ``_lift`` only, to a clip one tubelet deep;
with a single temporal position the temporal embedding and temporal attention are skipped, so the image
path is exactly a plain ViT (and matches timm's ``forward_features`` on inflated weights).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import NamedTuple

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from videovl.config import (
    ACTIVATIONS,
    ATTENTION_MODES,
    FINAL_NORMS,
    POS_EMBEDS,
    RESIDUAL_FRAMES,
    ROPE_AXES,
    ROPES,
    VISION_INITS,
    VISION_POOLS,
    ConfigError,
    VisionConfig,
    not_one_of,
)
from videovl.models.layers import (
    Attention,
    AttentionPool,
    Mlp,
    PatchEmbed3D,
    SpaceTimeBlock,
    gather_kept,
    keep_indices,
    resample_spatial,
    resample_temporal,
    rope_tables,
    rope_tables_3d,
)

__all__ = ["VisualEncoder", "VisualOutput"]


class VisualOutput(NamedTuple):
    pooled: Tensor  # (B, W) class token after the final norm, the mean of all patch tokens, or their MAP
    frames: Tensor  # (B, T', W) per temporal position: mean (or MAP) of its patch tokens after the final norm
    tokens: Tensor  # (B, [1 +] T' * N, W) class token first, then patches in (t, h, w) order
    # With ``final_norm: pooled`` (VideoMAE) the norm applies to ``pooled`` and ``frames`` only.
    # With token dropping: (B, T', K) indices of the spatial positions each frame kept, in (h, w) order;
    # ``frames`` and ``tokens`` then hold only those (N above becomes K). None: every token was kept.
    kept: Tensor | None = None


def check_vision_config(cfg: VisionConfig) -> None:
    """Raise a ConfigError naming the field, its value and the fix for an inconsistent VisionConfig."""
    # Load time checks the words already; a VisionConfig built in Python arrives here unchecked.
    for key, options in (("attention", ATTENTION_MODES), ("pool", VISION_POOLS), ("pos_embed", POS_EMBEDS),
                         ("final_norm", FINAL_NORMS), ("act", ACTIVATIONS), ("rope", ROPES),
                         ("rope_axes", ROPE_AXES), ("residual_frames", RESIDUAL_FRAMES),
                         ("init", VISION_INITS)):  # fmt: skip
        if getattr(cfg, key) not in options:
            raise not_one_of(f"model.vision.{key}", getattr(cfg, key), options)
    if cfg.pool == "cls" and not cfg.class_token:
        raise ConfigError("model.vision.pool is 'cls' but class_token is false; set pool: mean or map")
    if cfg.final_norm == "pooled" and cfg.pool != "mean":  # (a MAP head has a norm of its own)
        raise ConfigError("model.vision.final_norm is 'pooled' (a norm after mean pooling): set pool: mean")
    if cfg.residual_frames != "none" and (cfg.timm_model or cfg.timm_checkpoint or cfg.pretrained):
        raise ConfigError(
            "model.vision.residual_frames needs a patch embedding built from scratch (2 * in_chans inputs), "
            "but the tower starts from pretrained weights (timm_model, timm_checkpoint or pretrained): set "
            "residual_frames: none"
        )
    if cfg.image_size % cfg.patch_size:
        raise ConfigError(
            f"model.vision: image size {cfg.image_size} is not divisible by patch size {cfg.patch_size}"
        )
    if cfg.num_frames % cfg.tubelet_size:
        raise ConfigError(
            f"model.vision: {cfg.num_frames} frames are not divisible by tubelet_size {cfg.tubelet_size}"
        )
    if cfg.width % cfg.heads:
        raise ConfigError(f"model.vision: width {cfg.width} is not divisible by heads {cfg.heads}")
    if cfg.rope == "2d" and (cfg.width // cfg.heads) % 4:
        raise ConfigError(
            f"model.vision.rope is '2d' but the head width {cfg.width // cfg.heads} (width / heads) is not "
            "divisible by 4 (two axes, each in pairs of channels); change heads or set rope: none"
        )
    if cfg.rope == "3d":
        if cfg.attention != "joint" or cfg.class_token:
            raise ConfigError(
                "model.vision.rope is '3d' (rotary positions over time too) but attention is "
                f"'{cfg.attention}' and class_token is {cfg.class_token}: it needs attention: joint (one "
                "attention over the clip's tokens) and class_token: false; set those or rope: 2d / none"
            )
        if (cfg.width // cfg.heads) < 6 or (cfg.width // cfg.heads) % 2:
            raise ConfigError(
                f"model.vision.rope is '3d' but the head width {cfg.width // cfg.heads} (width / heads) is "
                "odd or below 6 (three axes, each in pairs of channels); change heads or set rope: none"
            )
    if cfg.attention == "factorised" and (cfg.class_token or cfg.temporal_depth < 1):
        raise ConfigError(
            f"model.vision.attention is 'factorised' (space blocks, then time blocks) but class_token is "
            f"{cfg.class_token} and temporal_depth {cfg.temporal_depth}: it needs class_token: false (pool: "
            "mean or map) and temporal_depth >= 1"
        )
    if cfg.attention != "factorised" and cfg.temporal_depth:
        raise ConfigError(
            f"model.vision.temporal_depth is {cfg.temporal_depth}, but temporal blocks after the spatial "
            f"ones belong to attention: factorised (attention is '{cfg.attention}'); set temporal_depth: 0"
        )
    if cfg.joint_depth and (cfg.attention != "factorised" or cfg.final_norm != "tokens"):
        raise ConfigError(
            f"model.vision.joint_depth is {cfg.joint_depth}: joint blocks after the temporal stage's norm "
            f"belong to attention: factorised with final_norm: tokens (attention is '{cfg.attention}', "
            f"final_norm '{cfg.final_norm}'); set joint_depth: 0"
        )
    if cfg.joint_depth < 0 or cfg.temporal_depth < 0:
        raise ConfigError(
            f"model.vision.temporal_depth ({cfg.temporal_depth}) and joint_depth ({cfg.joint_depth}) are "
            "counts of blocks: 0 or more"
        )
    map_switches = cfg.map_width is not None or not cfg.map_mlp or cfg.map_query_scale
    if map_switches and cfg.pool != "map":
        raise ConfigError(
            f"model.vision.map_width / map_mlp / map_query_scale shape the MAP head, but pool is "
            f"'{cfg.pool}'; set pool: map or leave them at null / true / false"
        )
    if cfg.map_width is not None and cfg.map_width % (cfg.map_heads or cfg.heads):
        raise ConfigError(
            f"model.vision.map_width {cfg.map_width} is not divisible by the MAP head's "
            f"{cfg.map_heads or cfg.heads} heads (map_heads, else heads)"
        )
    if cfg.attn_softcap is not None and cfg.attn_softcap <= 0:
        raise ConfigError(f"model.vision.attn_softcap must be positive or null, got {cfg.attn_softcap}")
    if cfg.map_class_token and not (cfg.pool == "map" and cfg.class_token):
        raise ConfigError(
            "model.vision.map_class_token needs pool: map and class_token: true (the MAP head attends over "
            "the class token too); set it false otherwise"
        )
    if cfg.map_heads is not None and cfg.map_width is None and cfg.width % cfg.map_heads:
        raise ConfigError(f"model.vision: width {cfg.width} is not divisible by map_heads {cfg.map_heads}")


def sinusoid_table(length: int, dim: int) -> Tensor:
    """(length, dim) fixed position table of the Transformer paper, as VideoMAE builds it: position /
    10000^(2i/dim) for channel pair i, sine on even channels and cosine on odd ones."""
    pos = torch.arange(length, dtype=torch.float64).unsqueeze(1)
    rate = 10000.0 ** (2 * (torch.arange(dim) // 2) / dim)
    angle = pos / rate
    table = torch.where(torch.arange(dim) % 2 == 0, angle.sin(), angle.cos())
    return table.float()


class VisualEncoder(nn.Module):
    """Space-time ViT built from a :class:`VisionConfig`; parameter names follow timm's ViT."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        check_vision_config(cfg)
        self.cfg = cfg
        self.width = w = cfg.width
        g = cfg.image_size // cfg.patch_size
        self.grid = (g, g)
        self.num_prefix = int(cfg.class_token)
        # timm (following CLIP) drops the patch bias exactly when it adds a pre-norm.
        self.patch_embed = PatchEmbed3D(
            cfg.patch_size, cfg.tubelet_size, cfg.in_chans * (1 if cfg.residual_frames == "none" else 2), w,
            bias=not cfg.pre_norm,
        )  # fmt: skip
        self.cls_token = nn.Parameter(torch.zeros(1, 1, w)) if cfg.class_token else None
        self.pos_embed = self.temporal_embed = None  # sinusoidal: a fixed table, computed in _embed; none
        if cfg.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix + g * g, w))  # class position first
            self.temporal_embed = nn.Parameter(torch.zeros(1, cfg.num_frames // cfg.tubelet_size, w))
        norm = partial(nn.LayerNorm, eps=cfg.norm_eps)
        self.norm_pre = norm(w) if cfg.pre_norm else nn.Identity()
        attn = partial(Attention, w, cfg.heads, cfg.qkv_bias, cfg.qk_norm, cfg.norm_eps, cfg.attn_softcap)
        factorised = cfg.attention == "factorised"

        def block(rate: float, mode: str) -> SpaceTimeBlock:
            return SpaceTimeBlock(
                w,
                attn(),
                Mlp(w, round(w * cfg.mlp_ratio), cfg.act),
                norm,
                layer_scale=cfg.layer_scale,
                drop_path=rate,
                mode=mode,
                temporal_attn=attn() if mode == "divided" else None,
            )

        rates = torch.linspace(0, cfg.drop_path, cfg.depth + cfg.temporal_depth + cfg.joint_depth).tolist()
        first = "space" if factorised else cfg.attention
        self.blocks = nn.ModuleList(block(r, first) for r in rates[: cfg.depth])
        # factorised: a norm after the spatial stage, then the temporal stage (VideoPrism's layernorm1)
        self.spatial_norm = norm(w) if factorised else None
        stages = cfg.depth + cfg.temporal_depth
        self.temporal_blocks = nn.ModuleList(block(r, "time") for r in rates[cfg.depth : stages])
        self.norm = norm(w)
        # after the norm: joint space-time blocks (VideoPrism's auxiliary layers), no norm after them
        self.joint_blocks = nn.ModuleList(block(r, "joint") for r in rates[stages:])
        # MAP: pools the patch tokens (a class token, if any, is not among them)
        hidden = round(w * cfg.mlp_ratio)
        if cfg.map_mlp_ratio is not None:
            hidden = round(w * cfg.map_mlp_ratio)
        self.attn_pool = None
        if cfg.pool == "map":
            self.attn_pool = AttentionPool(
                w, cfg.map_heads or cfg.heads, hidden, cfg.act, cfg.norm_eps,
                width=cfg.map_width, mlp=cfg.map_mlp, query_scale=cfg.map_query_scale,
            )  # fmt: skip
        self.grad_checkpointing = cfg.grad_checkpointing
        self.init_weights()

    def init_weights(self) -> None:
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            nn.init.zeros_(self.temporal_embed)  # a fresh encoder starts blind to time, like its 2D parent
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        if self.attn_pool is not None:
            nn.init.trunc_normal_(self.attn_pool.latent, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear) and self.cfg.init == "vit":
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):  # fan_in: PyTorch's own init, redrawn as vit's is on every call
                m.reset_parameters()
        for blk in self.blocks:
            blk.zero_temporal()

    # ------------------------------------------------------------------------------------ forward

    def _lift(self, x: Tensor) -> Tensor:
        """The one place an image (B, C, H, W) becomes a clip: one tubelet deep, (B, C, tubelet, H, W)."""
        if x.ndim == 4:
            return x.unsqueeze(2).expand(-1, -1, self.cfg.tubelet_size, -1, -1)
        if x.ndim != 5:
            raise ValueError(
                f"expected videos (B, C, T, H, W) or images (B, C, H, W), got shape {tuple(x.shape)}"
            )
        return x

    def mask_tube(self, tube: bool | None) -> bool:
        """Whether token dropping keeps the same spatial positions in every frame: ``tube``, or when it is
        None the attention mode's default (divided: tube; joint: each frame its own random positions)."""
        divided = self.cfg.attention != "joint"
        if tube is None:
            return divided
        if divided and not tube:
            raise ConfigError(
                "token dropping without tube masking needs model.vision.attention: joint; "
                f"{self.cfg.attention} attention attends over time at each spatial position, so every frame "
                "must keep the same positions (leave the stage's mask_tube unset or true)"
            )
        return tube

    def draw_kept(
        self, x: Tensor, mask_ratio: float, generator: torch.Generator | None = None, tube: bool | None = None
    ) -> Tensor:
        """The patch tokens that token dropping keeps for input ``x`` (as :meth:`forward` takes it), drawn
        from ``generator``: (B, T', K) indices into each frame's tokens. Drawn apart from the encoder so a
        compiled encoder (``train.compile``) takes them as a tensor instead of tracing a random draw."""
        x = self._lift(x)
        self._check_input(x)
        p = self.cfg.patch_size
        b, t, gh, gw = x.shape[0], x.shape[2] // self.cfg.tubelet_size, x.shape[3] // p, x.shape[4] // p
        return keep_indices(b, t, gh * gw, mask_ratio, generator, self.mask_tube(tube)).to(x.device)

    def _rope(
        self, frames: int, grid: tuple[int, int], kept: Tensor | None, device: torch.device
    ) -> tuple | None:
        """The rotary (cos, sin) tables of the patch tokens, each (1, 1 or T', N, e), or (B, T', K, e) for
        the kept ones; None without rotary positions. 2d: spatial only, every frame has the same rows;
        3d: each frame its own."""
        cfg = self.cfg
        if cfg.rope == "none":
            return None
        head = cfg.width // cfg.heads
        if cfg.rope == "3d":
            tables = rope_tables_3d(
                frames, grid, head, cfg.rope_temperature, cfg.rope_grid, cfg.rope_offset, cfg.rope_axes,
                device,
            )  # fmt: skip
            if kept is None:
                return tuple(r[None] for r in tables)
            time = torch.arange(frames, device=device)[None, :, None]
            return tuple(r[time, kept] for r in tables)  # (B, T', K, e)
        tables = rope_tables(
            grid, head, cfg.rope_temperature, cfg.rope_grid, cfg.rope_offset, cfg.rope_axes, device
        )
        if kept is None:
            return tuple(r[None, None] for r in tables)
        return tuple(r[kept] for r in tables)  # (B, T', K, e): each kept token's own row

    def _check_input(self, x: Tensor) -> None:
        """A ValueError naming the numbers when a lifted (B, C, T, H, W) input does not fit the encoder."""
        if self.cfg.residual_frames == "none":
            self.patch_embed.check(tuple(x.shape))
            return
        if x.shape[1] != self.cfg.in_chans:  # the patch embedding takes twice as many: say the input's
            raise ValueError(
                f"expected {self.cfg.in_chans} channels, got {x.shape[1]} (videos are (B, C, T, H, W))"
            )
        self.patch_embed.check((x.shape[0], 2 * x.shape[1], *x.shape[2:]))

    def _residual(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B, 2C, T, H, W): the frames, then each minus the clip's mean frame (mean) or
        minus the frame before it (previous, zero for the first). Zero for an image (one frame repeated)."""
        self._check_input(x)
        if self.cfg.residual_frames == "mean":
            return torch.cat([x, x - x.mean(dim=2, keepdim=True)], dim=1)
        return torch.cat([x, torch.diff(x, dim=2, prepend=x[:, :, :1])], dim=1)  # the first step is zero

    def _embed(self, x: Tensor, kept: Tensor | None) -> tuple[Tensor, Tensor | None, tuple | None]:
        x = self._lift(x)
        if self.cfg.residual_frames != "none":
            x = self._residual(x)
        x = self.patch_embed(x)  # (B, T', H', W', D)
        b, t, gh, gw, _ = x.shape
        x = rearrange(x, "b t h w d -> b t (h w) d")
        if self.cfg.pos_embed == "none":  # positions are the rotary embeddings' alone (V-JEPA 2)
            pos = cls_pos = 0.0
        elif self.cfg.pos_embed == "sinusoidal":  # one fixed table over the (t, h, w) order, as VideoMAE
            pos = rearrange(sinusoid_table(t * gh * gw, self.width), "(t n) d -> 1 t n d", t=t).to(x)
            cls_pos = 0.0
        else:
            pos = resample_spatial(self.pos_embed[:, self.num_prefix :], self.grid, (gh, gw)).unsqueeze(1)
            # one temporal position is an image (or one tubelet): no temporal embedding; factorised: it
            # comes between the stages (_encode)
            if t > 1 and self.spatial_norm is None:
                pos = pos + resample_temporal(self.temporal_embed, t).unsqueeze(2)  # (1, T', N, D)
            cls_pos = self.pos_embed[:, :1]
        x = x + pos
        if kept is not None:  # after the positions, so each kept token carries its place in the clip
            x = gather_kept(x, kept)  # (B, T', K, D)
        x = self.norm_pre(x)
        cls = None
        if self.cls_token is not None:
            cls = self.norm_pre(self.cls_token + cls_pos).expand(b, -1, -1)  # (B, 1, D)
        return x, cls, self._rope(t, (gh, gw), kept, x.device)

    def _encode(self, x: Tensor, kept: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Patch tokens (B, T', N or K, D) and class token (B, 1, D) or None; final-normed unless the norm
        comes after pooling (``final_norm: pooled``) or joint blocks follow it (``joint_depth``). ``kept``:
        the patch tokens to keep (draw_kept)."""
        x, cls, rope = self._embed(x, kept)
        x, cls = self._run(self.blocks, x, cls, rope)
        if self.spatial_norm is not None:  # factorised: the temporal stage over each spatial position
            x = self.spatial_norm(x)
            if self.temporal_embed is not None:
                x = x + resample_temporal(self.temporal_embed, x.shape[1]).unsqueeze(2)  # (1, T', 1, D)
            x, cls = self._run(self.temporal_blocks, x, cls, None)
        if self.cfg.final_norm == "pooled":
            return x, cls
        x, cls = self.norm(x), (self.norm(cls) if cls is not None else None)
        return self._run(self.joint_blocks, x, cls, rope)  # (B, T', N or K, D): one attention over the clip

    def _run(self, blocks: nn.ModuleList, x: Tensor, cls: Tensor | None, rope: tuple | None) -> tuple:
        for blk in blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x, cls = checkpoint(blk, x, cls, rope, use_reentrant=False)
            else:
                x, cls = blk(x, cls, rope)
        return x, cls

    @staticmethod
    def _sequence(x: Tensor, cls: Tensor | None) -> Tensor:
        seq = rearrange(x, "b t n d -> b (t n) d")
        return seq if cls is None else torch.cat([cls, seq], dim=1)

    def forward_features(self, x: Tensor) -> Tensor:
        """The final token sequence (B, [1 +] T' * N, W), as timm's ``forward_features``."""
        return self._sequence(*self._encode(x))

    def forward(
        self,
        x: Tensor,
        mask_ratio: float = 0.0,
        generator: torch.Generator | None = None,
        tube: bool | None = None,
        kept: Tensor | None = None,
    ) -> VisualOutput:
        """Encode videos or images; ``mask_ratio`` > 0 drops that share of each frame's patch tokens
        after the position embeddings (training only: the caller decides, ``generator`` draws which), or
        ``kept`` (from :meth:`draw_kept`) names the tokens to keep."""
        if kept is None and mask_ratio > 0:  # one way to draw them, whoever asks
            kept = self.draw_kept(x, mask_ratio, generator, tube)
        x, cls = self._encode(x, kept)
        if self.attn_pool is not None:  # the clip's tokens, then each frame's: (B, T'*N, D), (B, T', N, D)
            clip, each = rearrange(x, "b t n d -> b (t n) d"), x
            if self.cfg.map_class_token:  # (B, 1 + T'*N, D) and (B, T', 1 + N, D)
                clip = torch.cat([cls, clip], dim=1)
                each = torch.cat([cls.unsqueeze(1).expand(-1, x.shape[1], -1, -1), x], dim=2)
            pooled, frames = self.attn_pool(clip), self.attn_pool(each)
        else:
            pooled = cls[:, 0] if self.cfg.pool == "cls" else x.mean(dim=(1, 2))
            frames = x.mean(dim=2)
        if self.cfg.final_norm == "pooled":
            pooled, frames = self.norm(pooled), self.norm(frames)
        return VisualOutput(pooled=pooled, frames=frames, tokens=self._sequence(x, cls), kept=kept)

    # ------------------------------------------------------------------------- uniform interface

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        """Embeddings, the class token, norms and biases: every parameter that is not a matrix."""
        embeddings = {"cls_token", "pos_embed", "temporal_embed", "attn_pool.latent"}
        return {n for n, p in self.named_parameters() if p.ndim < 2 or n in embeddings}

    def lock(self, unlocked_groups: int = 0) -> None:
        """Freeze the encoder except its last ``unlocked_groups`` groups, in order: embeddings (patch,
        position, class, pre-norm), blocks[0], ..., blocks[-2], then blocks[-1] with the final norm (and
        the MAP head); a factorised encoder's temporal blocks follow its spatial ones (the first with the
        norm between the stages), and its joint blocks follow those (the first with the final norm)."""
        embed = [self.patch_embed, self.norm_pre]
        embed_params = [p for p in (self.cls_token, self.pos_embed, self.temporal_embed) if p is not None]
        layers = [[blk] for blk in (*self.blocks, *self.temporal_blocks, *self.joint_blocks)]
        if self.spatial_norm is not None:
            layers[len(self.blocks)].insert(0, self.spatial_norm)
        if len(self.joint_blocks):
            layers[-len(self.joint_blocks)].insert(0, self.norm)
        else:
            layers[-1].append(self.norm)
        layers[-1] += [] if self.attn_pool is None else [self.attn_pool]
        groups = [[*embed, *embed_params], *layers]
        self.requires_grad_(False)
        for group in groups[len(groups) - unlocked_groups :] if unlocked_groups > 0 else []:
            for part in group:
                part.requires_grad_(True)

    def named_temporal_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """The temporal embedding, every block's temporal attention branch (norm included) and a factorised
        encoder's temporal blocks."""
        for name, p in self.named_parameters():
            if name == "temporal_embed" or ".temporal_" in name or name.startswith("temporal_blocks."):
                yield name, p

    def temporal_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters a stage freezes or trains alone to control temporal modelling."""
        for _, p in self.named_temporal_parameters():
            yield p
