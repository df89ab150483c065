from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the checkout (real clips and benchmark annotations); tests skip without it."""
    if not (SHARED / "data").is_dir():
        pytest.skip(f"{SHARED}/data is absent: real clips and annotation files are not available here")
    return SHARED / "data"
