"""Train state saved with every checkpoint: where the run is, so ``--resume`` continues exactly."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["TrainState", "Streams"]

# modality -> loader lane -> shard part -> position of that stream (entries taken), for one process
Streams = dict[str, dict[int, dict[int, int]]]


@dataclass
class TrainState:
    stage: int = 0  # index into config.stages
    stage_step: int = 0  # optimizer steps done in the current stage
    step: int = 0  # optimizer steps done in the whole run
    mined_at: int = -1  # stage step of the last nearest-neighbour mining (-1: not yet in this stage)
    bad_samples: list[str] = field(default_factory=list)  # unreadable files met so far (reported at the end)
    metrics: dict[str, float] = field(default_factory=dict)  # last evaluation
    # Who wrote the checkpoint: batches and shard streams are laid out per process and loader worker, so
    # a resume with other counts cannot continue exactly (-1: a checkpoint from before they were kept).
    processes: int = -1
    loader_workers: int = -1
    # Shard stream positions in the current stage, one entry per process (gathered before each save).
    streams: list[Streams] = field(default_factory=list)

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)
