"""Run tools/pretrain.py recording each process's batches: ``python tests/record_batches.py OUT ARGS...``
appends ``[modality, sample indices]`` per micro-batch to ``OUT/rank{R}.json`` (for multi-process tests)."""

import json
import os
import sys
from pathlib import Path

from tools import pretrain
from videovl.train import loop


def main(out: Path, argv: list[str]) -> None:
    seen = []
    real = loop.open_batches

    def recording(*args, **kwargs):
        for modality, batch in real(*args, **kwargs):
            seen.append([modality, batch["index"].tolist()])
            yield modality, batch

    loop.open_batches = recording
    pretrain.main(argv)
    path = out / f"rank{os.environ.get('RANK', '0')}.json"
    path.write_text(json.dumps((json.loads(path.read_text()) if path.is_file() else []) + seen))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
