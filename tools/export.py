"""Export a checkpoint's towers to the format they came from.

python tools/export.py --checkpoint runs/clip4clip_msrvtt/model --format clip --out exported/clip
python tools/export.py --checkpoint runs/siglip_msrvtt/model --format siglip --out exported/siglip
python tools/export.py --checkpoint runs/finetune/model --format timm --out exported/vit.safetensors
python tools/export.py --checkpoint runs/finetune/model --format timesformer --out exported/timesformer
python tools/export.py --checkpoint runs/vjepa2_ssv2/model --format vjepa2 --out exported/vjepa2
python tools/export.py --checkpoint runs/videoprism_k400/model --format videoprism --out exported/videoprism

clip: a transformers CLIPModel folder with the tokenizer beside it; siglip: a transformers SiglipModel
folder with the tokenizer beside it (the text projection folded into the text head; the visual projection
must still be the identity, as training with stages[].freeze: [projections] keeps it); timm: the visual
tower as a timm ViT state dict (safetensors); timesformer: a transformers TimesformerModel folder of a
divided visual tower; vjepa2: a transformers VJEPA2Model folder of a V-JEPA 2 visual tower, its encoder
only (videovl keeps no predictor; transformers starts a new one when it loads the folder); videoprism: a
transformers VideoPrismVisionModel folder of a factorised visual tower (the backbone). CLIP, SigLIP
and timm hold image models: the temporal branch is left out, and the tool lists what it left out.
"""

from __future__ import annotations

import argparse

from videovl.cli import run_tool
from videovl.data.tokenizer import load_tokenizer
from videovl.models.checkpoint import load_checkpoint, require_checkpoint
from videovl.models.export import EXPORT_FORMATS, export

IMAGE_MODEL = "holds an image model: the temporal branch and any heads have no place there"
WHY_LEFT_OUT = {
    "clip": f"CLIP {IMAGE_MODEL}",
    "siglip": f"SigLIP {IMAGE_MODEL}",
    "timm": f"timm {IMAGE_MODEL}",
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a model folder written by save_checkpoint")
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    p.add_argument(
        "--out",
        required=True,
        help="the folder (clip, siglip, timesformer, vjepa2, videoprism) or file (timm) to write",
    )
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    require_checkpoint(args.checkpoint, "--checkpoint")  # a mistyped path says so, first
    model, cfg = load_checkpoint(args.checkpoint)
    left_out = export(model, args.format, args.out)
    if args.format in ("clip", "siglip"):
        load_tokenizer(cfg.model.text).save_pretrained(args.out)
    print(f"wrote {args.format} weights to {args.out}")
    if args.format == "vjepa2":
        print("the folder holds V-JEPA 2's encoder only: VJEPA2Model.from_pretrained starts a new predictor")
    if left_out:
        why = WHY_LEFT_OUT.get(args.format, f"{args.format} has no place for them")
        print(
            f"left out ({why}): "
            f"{len(left_out)} tensors: {', '.join(left_out[:6])}{', ...' if len(left_out) > 6 else ''}"
        )
    return {"out": args.out, "left_out": left_out}


if __name__ == "__main__":
    run_tool(main)
