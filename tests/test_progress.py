"""Progress: a bar on a terminal, plain lines every N updates in a log file."""

import io

from tqdm.auto import tqdm

from videovl.progress import LineProgress, progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_file_gets_one_line_every_n_updates_and_one_at_the_end():
    out = io.StringIO()
    bar = progress(total=25, desc="joint", unit="step", every=10, file=out, dynamic_ncols=True)
    assert isinstance(bar, LineProgress)
    for step in range(25):
        bar.set_postfix(loss=f"{1 / (step + 1):.3f}")  # before the update, as the loop does
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [line.split(":")[1].split()[0] for line in lines] == ["10/25", "20/25", "25/25"]
    assert lines[0].startswith("joint: 10/25 (40%) step") and "left" in lines[0]
    assert lines[-1].endswith("loss=0.040") and "left" not in lines[-1]


def test_resumed_counts_start_at_initial_and_writes_pass_through():
    out = io.StringIO()
    bar = progress(total=10, initial=4, every=3, desc="s", file=out)
    bar.update(3)
    bar.write("step 7: val/t2v/R@1=12.5")
    bar.update(3)
    bar.close()
    assert out.getvalue().splitlines()[1] == "step 7: val/t2v/R@1=12.5"
    assert [ln.split()[1] for ln in out.getvalue().splitlines() if ln.startswith("s:")] == ["7/10", "10/10"]


def test_iterating_reports_by_default_a_tenth_of_the_length():
    out = io.StringIO()
    assert list(progress(range(20), desc="embed", file=out)) == list(range(20))
    assert len(out.getvalue().splitlines()) == 10


def test_disabled_writes_nothing_and_a_terminal_gets_tqdm():
    out = io.StringIO()
    bar = progress(total=5, disable=True, file=out)
    bar.update(5)
    bar.write("hidden")
    bar.close()
    assert out.getvalue() == ""
    assert isinstance(progress(total=5, file=_Terminal(), disable=True), tqdm)
