"""Train state saved with every checkpoint: where the run is, so ``--resume`` continues exactly."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["TrainState"]


@dataclass
class TrainState:
    stage: int = 0  # index into config.stages
    stage_step: int = 0  # optimizer steps done in the current stage
    step: int = 0  # optimizer steps done in the whole run
    mined_at: int = -1  # stage step of the last nearest-neighbour mining (-1: not yet in this stage)
    bad_samples: list[str] = field(default_factory=list)  # unreadable files met so far (reported at the end)
    metrics: dict[str, float] = field(default_factory=dict)  # last evaluation

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)
