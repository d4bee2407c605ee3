"""The LangGraph example runs as a user runs it: its own 2-shard cluster, start to end."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "langgraph_agent.py"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_example_runs_interrupts_resumes_forks_and_inspects(tmp_path):
    proc = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True,
                          timeout=280, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "interrupted before ('approve',)" in out
    assert "resumed and finished: booked ['train', 'hotel', 'museum']" in out
    assert "  step -1 input  next=['__start__']" in out
    assert "fork booked ['train', 'museum']; the original still has " \
           "['train', 'hotel', 'museum']" in out
    assert "history now holds 9 checkpoints" in out
    assert "run langgraph:thread:trip-to-lyon: 9 checkpoints" in out
    assert "diff against the copy taken before the fork: 3 checkpoints added" in out
    assert out.rstrip().endswith("done")


def test_example_against_an_existing_database(db):
    sys.path.insert(0, str(EXAMPLE.parent))
    try:
        import langgraph_agent
    finally:
        sys.path.remove(str(EXAMPLE.parent))
    lines = []
    first = langgraph_agent.main(db, out=lines.append)
    again = langgraph_agent.main(db, out=lines.append)  # reruns start the thread afresh
    assert first == again == {"booked": ["train", "hotel", "museum"],
                              "forked": ["train", "museum"], "history": 6, "added": 3,
                              "checkpoints": 9}
