"""Text-to-video search over an extraction folder.

python tools/search.py --index emb/ --text "a digit moves left" --top-k 5
python tools/search.py --index emb/ --text "a dog runs" --checkpoint runs/other/model   # another text tower
python tools/search.py --index emb/ --text "a digit moves left" --html hits.html      # a page to look at

The query is embedded with the text tower of the checkpoint the folder was extracted with (recorded in
OUT/extract.json; its tokenizer comes from the checkpoint folder), on the CPU. OUT/index.faiss is used
when present (tools/extract_embeddings.py --index) and faiss is installed, else the clip rows are searched
exactly (numpy; no faiss needed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from videovl.cli import run_tool
from videovl.data.tokenizer import load_tokenizer
from videovl.eval.embed import embed_texts, tokenized_batches
from videovl.eval.extract import first_captions, load_index, read_lines, search
from videovl.eval.pages import FrameStrips, Hit, Query, retrieval_page
from videovl.models.checkpoint import load_checkpoint


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", required=True, help="extraction folder (--out of extract_embeddings.py)")
    p.add_argument("--text", required=True, help="the query")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument(
        "--checkpoint", help="checkpoint whose text tower embeds the query (default: the one used)"
    )
    p.add_argument(
        "--html",
        metavar="PAGE",
        help="also write one self-contained HTML page: each hit's frames, score, id, caption and path",
    )
    args = p.parse_args(argv)
    if args.top_k < 1:
        p.error(f"--top-k must be >= 1, got {args.top_k}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    folder = Path(args.index)
    info_path = folder / "extract.json"
    if not info_path.is_file():
        raise FileNotFoundError(
            f"{info_path} does not exist: run tools/extract_embeddings.py --out {folder} first"
        )
    checkpoint = args.checkpoint or json.loads(info_path.read_text())["checkpoint"]
    model, cfg = load_checkpoint(checkpoint)
    model.eval()
    tokens = tokenized_batches(load_tokenizer(cfg.model.text), [args.text], 1, cfg.model.text.max_length)
    query = embed_texts(model, tokens, torch.device("cpu"))
    scores, rows = search(load_index(folder), query.numpy(), args.top_k)
    ids, paths = read_lines(folder / "ids.txt"), read_lines(folder / "paths.txt")
    results = [
        {"rank": r + 1, "id": ids[j], "score": float(s), "path": paths[j]}
        for r, (s, j) in enumerate(zip(scores[0], rows[0]))
        if j >= 0
    ]
    print(f"query: {args.text!r}")
    width = max((len(x["id"]) for x in results), default=2)
    for x in results:
        print(f"{x['rank']:>3}  {x['score']:7.4f}  {x['id']:<{width}}  {x['path']}")
    out = {"query": args.text, "checkpoint": str(checkpoint), "results": results}
    if args.html:
        hit_rows = [int(j) for j in rows[0] if j >= 0]  # the results' clip rows, in order
        out["html_unreadable"] = write_page(args.html, folder, args.text, str(checkpoint), results, hit_rows)
        print(f"page: {args.html} ({out['html_unreadable']} unreadable videos)")
    return out


def write_page(
    page: str, folder: Path, text: str, checkpoint: str, results: list[dict], hit_rows: list[int]
) -> int:
    """Write the hits' page; returns how many of the hits' videos could not be read for it. The frames
    are spread over each whole file (a manifest's clip window is not recorded in the folder)."""
    caption = first_captions(folder)
    strips = FrameStrips()
    hits = [
        Hit(x["rank"], x["score"], x["id"], x["path"], caption.get(j), strips(x["path"]))
        for x, j in zip(results, hit_rows, strict=True)
    ]
    summary = {"index": folder, "checkpoint": checkpoint, "hits": len(hits)}
    summary["unreadable videos"] = len(strips.unreadable)
    Path(page).parent.mkdir(parents=True, exist_ok=True)
    Path(page).write_text(retrieval_page("search", [Query(text, hits)], summary), encoding="utf-8")
    return len(strips.unreadable)


if __name__ == "__main__":
    run_tool(main)
