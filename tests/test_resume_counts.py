"""The train state keeps who wrote it (processes, loader workers), and a resume with other counts says
before step one what changes and how to keep it exact."""

from conftest import tiny_pretrain_args

from tools import pretrain as tool
from videovl.train.loop import resume_note
from videovl.train.state import TrainState


def test_resume_note_names_what_changes_and_how_to_keep_it_exact():
    state = TrainState(step=40, processes=2, loader_workers=2)
    assert resume_note(state, 2, 2, streamed=True) is None
    assert resume_note(state, 2, 0, streamed=False) is None  # manifest batches: any worker count
    note = resume_note(state, 2, 0, streamed=True)
    assert "data.num_workers 2 -> 0" in note and "launch 2 processes with data.num_workers=2" in note
    note = resume_note(state, 4, 2, streamed=False)
    assert "2 -> 4 processes" in note and "step 40" in note
    assert resume_note(TrainState(step=5), 4, 1, streamed=True) is None  # an older checkpoint: unknown


def test_the_state_records_the_counts_and_a_resume_with_others_says_so(tiny_demo, tmp_path, capsys):
    import torch

    args = tiny_pretrain_args(tiny_demo, tmp_path / "run")
    tool.main([*args, "--stop-after-steps", "1"])
    file = next((tmp_path / "run" / "checkpoints").glob("step_*/custom_checkpoint_0.pkl"))
    saved = torch.load(file, weights_only=False)
    assert (saved["processes"], saved["loader_workers"]) == (1, 0) and saved["streams"] == [{}]
    capsys.readouterr()
    state = TrainState(**saved)
    state.processes = 2  # as if two processes had written it
    torch.save(
        state.state_dict(), next((tmp_path / "run" / "checkpoints").glob("step_*/custom_checkpoint_0.pkl"))
    )
    tool.main([*args, "--resume", "latest", "--stop-after-steps", "2"])
    out = capsys.readouterr().out
    assert "2 -> 1 processes" in out and out.index("2 -> 1 processes") < out.index("stopped after step 2")
