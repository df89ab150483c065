"""Two CPU processes (gloo, DDP) each holding part of a batch give exactly the single-process loss and
gradients when features are gathered with ``gather_with_grad``; the local-slice gather gives 1/world_size."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from videovl.distributed import gather_no_grad, gather_with_grad, get_rank, get_world_size
from videovl.losses import ContrastiveLoss, frame_contrastive_loss, sigmoid_loss, soft_target_infonce

N, T, SPLIT = 7, 3, (4, 3)  # uneven halves, as in an epoch's last batch
LABELS = torch.tensor([0, -1, 0, 2, -1, 2, -1])
HASHES = torch.tensor([5, 6, 7, 8, 9, 10, 6])


class Towers(nn.Module):
    """Tiny shared towers: per-frame video features, their mean as the clip, and a text projection."""

    def __init__(self, bias: bool = False):
        super().__init__()
        self.video, self.text = nn.Linear(8, 6), nn.Linear(5, 6)
        self.log_scale = nn.Parameter(torch.tensor(2.0))
        self.logit_bias = nn.Parameter(torch.tensor(-1.0)) if bias else None  # the sigmoid loss's

    def forward(self, pixels, tokens):
        frames = F.normalize(self.video(pixels), dim=-1)  # (B, T, 6)
        clip, text = F.normalize(frames.mean(1), dim=-1), F.normalize(self.text(tokens), dim=-1)
        return frames, clip, text, self.log_scale.exp()


def _inputs():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(N, T, 8, generator=gen), torch.randn(N, 5, generator=gen)


def _model(bias: bool = False):
    torch.manual_seed(0)
    return Towers(bias).double()


def _loss(model, pixels, tokens, labels, hashes, **dist_args):
    frames, clip, text, scale = model(pixels.double(), tokens.double())
    ids = dict(label_ids=labels, text_hash=hashes, **dist_args)
    loss = ContrastiveLoss()(clip, text, scale, **ids)["contrastive_loss"]
    return loss + frame_contrastive_loss(frames, text, scale, **ids)["frame_loss"]


def _sigmoid(model, pixels, tokens, labels, hashes, **dist_args):
    _, clip, text, scale = model(pixels.double(), tokens.double())
    bias = getattr(model, "module", model).logit_bias
    ids = dict(label_ids=labels, text_hash=hashes, **dist_args)
    return sigmoid_loss(clip, text, scale, bias, **ids)["contrastive_loss"]


def _grads(model):
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def _worker(rank, port, path):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    try:
        pixels, tokens = _inputs()
        start = sum(SPLIT[:rank])
        local = slice(start, start + SPLIT[rank])
        model = DistributedDataParallel(_model())  # averages parameter gradients over ranks
        loss = _loss(
            model, pixels[local], tokens[local], LABELS[local], HASHES[local], rank=rank, world_size=2
        )
        loss.backward()
        exact = {k.removeprefix("module."): g for k, g in _grads(model).items()}
        gathered = gather_no_grad(torch.arange(SPLIT[rank]) + 10 * rank)

        # The shortcut we do not ship: gather without gradients and put the local slice back.
        model.zero_grad()
        _, clip, text, scale = model(pixels[local].double(), tokens[local].double())
        clip_all, text_all = gather_no_grad(clip), gather_no_grad(text)
        clip_all[local], text_all[local] = clip, text
        logits = scale * text_all @ clip_all.t()
        soft_target_infonce(logits, torch.eye(N, dtype=torch.bool)).backward()
        naive = {k.removeprefix("module."): g for k, g in _grads(model).items()}

        # The sigmoid loss: each rank scores its own texts against every rank's videos, chunk by chunk.
        model = DistributedDataParallel(_model(bias=True))
        sigmoid = _sigmoid(
            model, pixels[local], tokens[local], LABELS[local], HASHES[local], rank=rank, world_size=2
        )
        sigmoid.backward()
        sigmoid_grads = {k.removeprefix("module."): g for k, g in _grads(model).items()}
        if rank == 0:
            torch.save(
                {"loss": loss.detach(), "exact": exact, "naive": naive, "gathered": gathered,
                 "sigmoid": sigmoid.detach(), "sigmoid_grads": sigmoid_grads,
                 "rank": get_rank(), "world_size": get_world_size()},
                path,
            )  # fmt: skip
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_match_single_process(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "rank0.pt"
    mp.spawn(_worker, args=(port, str(path)), nprocs=2, join=True)
    got = torch.load(path)
    assert got["rank"] == 0 and got["world_size"] == 2
    assert got["gathered"].tolist() == [0, 1, 2, 3, 10, 11, 12]  # rank order, uneven sizes

    model = _model()
    pixels, tokens = _inputs()
    loss = _loss(model, pixels, tokens, LABELS, HASHES)
    loss.backward()
    assert torch.allclose(got["loss"], loss.detach(), rtol=0, atol=1e-6)
    for name, grad in _grads(model).items():
        assert torch.allclose(got["exact"][name], grad, rtol=0, atol=1e-6), name

    # The local-slice gather: the towers get 1/world_size of the single-process gradient.
    model.zero_grad()
    _, clip, text, scale = model(pixels.double(), tokens.double())
    soft_target_infonce(scale * text @ clip.t(), torch.eye(N, dtype=torch.bool)).backward()
    for name, grad in _grads(model).items():
        expected = grad if name == "log_scale" else grad / 2  # the scale is not gathered: it stays exact
        assert torch.allclose(got["naive"][name], expected, rtol=0, atol=1e-6), name

    # The sigmoid loss: the same value on every rank, and exactly the single-process gradients
    model = _model(bias=True)
    loss = _sigmoid(model, pixels, tokens, LABELS, HASHES)
    loss.backward()
    assert torch.allclose(got["sigmoid"], loss.detach(), rtol=0, atol=1e-6)
    for name, grad in _grads(model).items():
        assert grad.abs().max() > 0, name
        assert torch.allclose(got["sigmoid_grads"][name], grad, rtol=0, atol=1e-6), name


def test_single_process_gathers_are_identity():
    t = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(t) is t
    assert torch.equal(gather_no_grad(t), t) and not gather_no_grad(t).requires_grad
    assert (get_rank(), get_world_size()) == (0, 1)
    with pytest.raises(ValueError, match="world_size=2"):
        ContrastiveLoss()(t, t, 1.0, world_size=2)
