"""The examples users copy run as written: the README's embedded example and the reference's
self-contained ones, each in a fresh working directory."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


def test_the_readme_embedded_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (block,) = [b for b in _python_blocks(ROOT / "README.md")
                if "inmem.open(" in b and "db.begin_run(" in b]
    assert '"./data"' not in block  # the cluster's default directory is left to the cluster
    exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "agent-data" / "wal").is_dir()
    import inmem
    with inmem.open(tmp_path / "agent-data") as db:
        (info,) = db.runs.list()
        assert info.status == "completed" and db.kv.get(info.run_id, "count") == 1


@pytest.mark.parametrize("marker", ["def take(s):", "def bump(tx):", "def sort_maps(v):",
                                    "p.kv.cas(run, \"a\", 99, \"x\")"])
def test_reference_examples_run(marker, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (block,) = [b for b in _python_blocks(ROOT / "docs" / "api.md") if marker in b]
    import inmem
    with inmem.open(None) as db:
        exec(compile(block, "docs/api.md", "exec"),
             {"inmem": inmem, "db": db, "run": db.begin_run()})


def test_the_langgraph_store_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (block,) = [b for b in _python_blocks(ROOT / "docs" / "langgraph.md") if "InmemStore(inmem" in b]
    import inmem
    from inmem.langgraph import InmemStore
    scope = {"inmem": inmem, "InmemStore": InmemStore}
    try:
        exec(compile(block + "\nfound = store.search(('users',), query='tea')\n",
                     "docs/langgraph.md", "exec"), scope)
        assert [item.key for item in scope["found"]] == ["prefs"]
        assert scope["store"].get(("users", "u1"), "prefs").value == {"text": "likes green tea"}
    finally:
        if "store" in scope:
            scope["store"].db.close()  # the example leaves its database open


def test_the_asyncio_example_runs():
    (block,) = [b for b in _python_blocks(ROOT / "docs" / "api.md") if "inmem.asyncio.open" in b]
    exec(compile(block, "docs/api.md", "exec"), {})
