"""Smoke test of the langgraph tier: its four rows run at tiny sizes with both LangGraph
peers beside them, carry the interleaved-round details, and judge the ratio target.
Nothing here looks at a timing."""

from __future__ import annotations

import json

import pytest

from inmem.bench.__main__ import TIERS, main
from inmem.bench.context import make_row, target
from inmem.bench.tiers.langgraph import PEERS, ROWS


def test_langgraph_is_a_default_tier():
    assert "langgraph" in TIERS


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_langgraph_tier_runs_every_row_against_both_savers(tmp_path):
    out = tmp_path / "out"
    code = main(["--smoke", "--out", str(out), "--no-install", "--no-plots", "--no-table",
                 "--quiet", "--tier", "langgraph"])
    assert code == 0
    rows = {r["name"]: r for r in json.loads((out / "results.json").read_text())["results"]}
    assert sorted(rows) == sorted(ROWS)
    for name, row in rows.items():
        assert row["status"] == "ok", (name, row["status"])
        assert row["tier"] == "langgraph" and row["unit"] == "ops/s" and row["value"] > 0
        for peer in PEERS:
            assert isinstance(row["peers"][peer], float), (name, peer, row["peers"][peer])
            assert row["ratio_spread"][peer]["rounds"] >= 1
        assert row["target_met"] in (True, False)
        # No worker thread on either side: an in-process buffered store answers at
        # once, and the cluster side is the asyncio client.
        assert row["extra"]["offload"] is False
        assert ("inmem.asyncio" in row["extra"]["database"]) is name.endswith(".cluster")


def test_min_ratio_target_needs_every_factor():
    t = target("x", "y", min_ratio={"a": 2.0, "b": 0.5})
    met = make_row("r", "t", "m", "ops/s", value=100.0, peers={"a": 50.0, "b": 200.0}, target=t)
    assert met["target_met"] is True
    missed = make_row("r", "t", "m", "ops/s", value=99.0, peers={"a": 50.0, "b": 200.0},
                      target=t)
    assert missed["target_met"] is False
    unknown = make_row("r", "t", "m", "ops/s", value=99.0, peers={"a": "skipped: x", "b": 1.0},
                       target=t)
    assert unknown["target_met"] is None
