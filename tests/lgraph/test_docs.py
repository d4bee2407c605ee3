"""Every Python example in docs/langgraph.md runs as written: as a script of its own, in
a fresh directory, and does what the text beside it says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "langgraph.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def _run(block: str, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-c", block], cwd=cwd, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_doc_has_its_examples():
    blocks = _blocks()
    assert len(blocks) == 2
    assert "builder.compile(checkpointer=InmemSaver(db)" in blocks[0]
    assert "InmemStore(inmem.open" in blocks[1]


@pytest.mark.timeout(150)
def test_the_quick_start_runs_and_its_state_is_on_disk(tmp_path):
    out = _run(_blocks()[0], tmp_path)
    assert out.strip() == "{'messages': ['hello']}"
    import inmem
    from inmem.langgraph import InmemSaver
    with inmem.open(tmp_path / "agent-data") as db:
        (tuple_,) = list(InmemSaver(db).list({"configurable": {"thread_id": "t1"}}, limit=1))
        assert tuple_.checkpoint["channel_values"]["messages"] == ["hello"]


@pytest.mark.timeout(150)
def test_the_store_example_runs(tmp_path):
    block = _blocks()[1] + "\nprint([(i.key, i.value) for i in store.search(('users',)," \
                           " query='tea')])\n"
    out = _run(block, tmp_path)
    assert out.strip() == "[('prefs', {'text': 'likes green tea'})]"
