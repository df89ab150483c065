"""Building blocks of the space-time ViT: attention, MLP, 3D patch embedding, position embeddings, blocks,
attention pooling, rotary positions."""

from videovl.models.layers.attention import Attention
from videovl.models.layers.blocks import BLOCK_MODES, Block, DropPath, LayerScale, SpaceTimeBlock
from videovl.models.layers.masking import gather_kept, keep_indices, num_kept
from videovl.models.layers.mlp import Mlp, QuickGELU, make_act
from videovl.models.layers.patch_embed import PatchEmbed3D
from videovl.models.layers.pooling import AttentionPool
from videovl.models.layers.pos_embed import resample_spatial, resample_temporal
from videovl.models.layers.rope import apply_rope, rope_tables, rope_tables_3d

__all__ = [
    "BLOCK_MODES",
    "Attention",
    "AttentionPool",
    "Block",
    "DropPath",
    "LayerScale",
    "Mlp",
    "PatchEmbed3D",
    "QuickGELU",
    "SpaceTimeBlock",
    "apply_rope",
    "gather_kept",
    "keep_indices",
    "make_act",
    "num_kept",
    "resample_spatial",
    "resample_temporal",
    "rope_tables",
    "rope_tables_3d",
]
