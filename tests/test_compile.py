"""train.compile: the visual tower compiles whole (no graph breaks) for images, videos and masked clips,
computes what eager does, compiles once per input shape, and a compiled pretraining matches an eager one."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import tiny_pretrain_args
from tools import pretrain as tool
from videovl.config import ConfigError
from videovl.models.factory import create_model

pytestmark = pytest.mark.usefixtures("one_thread")


def inputs():
    torch.manual_seed(0)
    return {
        "video": (torch.randn(2, 3, 4, 32, 32), {}),
        "image": (torch.randn(2, 3, 32, 32), {}),
        "masked video": (torch.randn(2, 3, 4, 32, 32), {"mask_ratio": 0.5}),
    }


def encode(model, x, kw):
    generator = torch.Generator().manual_seed(1) if kw else None
    out = model.encode_video(x, generator=generator, **kw)
    out.clip.square().sum().backward()
    grad = model.visual.patch_embed.proj.weight.grad.clone()
    model.zero_grad(set_to_none=True)
    return out.clip.detach(), grad


TOWERS = {
    "divided": {},
    "2d rotary (PE-Core)": {"rope": "2d"},
    "3d rotary, joint, no class token (V-JEPA 2)": {
        "rope": "3d", "attention": "joint", "pos_embed": "none", "class_token": False, "pool": "mean",
    },
    "factorised, capped logits (VideoPrism)": {
        "attention": "factorised", "temporal_depth": 1, "class_token": False, "pool": "mean",
        "tubelet_size": 1, "attn_softcap": 50.0,
    },
}  # fmt: skip


@pytest.mark.parametrize("vision", TOWERS.values(), ids=TOWERS.keys())
def test_the_visual_tower_compiles_whole_once_per_shape_and_computes_what_eager_does(vision):
    # dynamo keeps compiled entries per code object, across models: the earlier cases' would count
    # against this one's recompile limit
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = create_model({"name": "test", "vision": vision}).train()
    graphs = []

    def counting(gm, example_inputs):  # a backend that records each graph dynamo hands over
        graphs.append(gm)
        return gm.forward

    traced, compiled = copy.deepcopy(eager), copy.deepcopy(eager)
    traced.visual.compile(backend=counting, fullgraph=True)  # fullgraph: a graph break is an error
    compiled.visual.compile(backend="aot_eager", fullgraph=True)  # forward and backward through AOTAutograd
    for name, (x, kw) in inputs().items():
        want = encode(eager, x, kw)
        for model in (traced, compiled):
            got = encode(model, x, kw)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)
    assert len(graphs) == 3  # one graph per input kind
    for x, kw in inputs().values():  # the same shapes again: nothing recompiles
        encode(traced, x, kw)
    assert len(graphs) == 3


def test_a_compiled_pretraining_ends_where_an_eager_one_does(tiny_demo, tmp_path):
    common = ["data.val_manifest=null", "data.val_image_manifest=null", "data.test_manifest=null",
              "stages.2.steps=0", "stages.3.steps=0"]  # fmt: skip
    weights = {}
    for backend in ("null", "aot_eager"):
        out = tmp_path / backend
        tool.main(tiny_pretrain_args(tiny_demo, out, *common, f"train.compile={backend}"))
        weights[backend] = load_file(str(out / "model" / "model.safetensors"))
    for k, v in weights["null"].items():
        torch.testing.assert_close(weights["aot_eager"][k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_an_unknown_backend_is_an_error_before_step_one(tiny_demo, tmp_path):
    with pytest.raises(ConfigError, match="train.compile is 'inductr'.*inductor"):
        tool.main(tiny_pretrain_args(tiny_demo, tmp_path / "run", "train.compile=inductr"))
