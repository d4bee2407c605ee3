"""The recovery tier's text row with real child processes, at a tiny size: fields, not timings."""

from __future__ import annotations

import pytest

from inmem.bench.context import Context, scaled_sizes
from inmem.bench.peers import Peers
from inmem.bench.tiers import recovery as recovery_tier

pytestmark = pytest.mark.slow


def test_full_text_row_compares_text_with_binary_and_checks_the_first_search(tmp_path):
    ctx = Context(quick=True, sizes=scaled_sizes(True, 0.001),
                  peers=Peers((), install=False, scratch_dir=str(tmp_path)),
                  scratch_dir=str(tmp_path), progress=False,
                  ran_on={"commit": "c" * 40, "host": "h", "cpu": "cpu", "cores": 2})
    recovery_tier._full_text(ctx, 3000, 2)
    row = {r["name"]: r for r in ctx.rows}["recovery.full.text"]
    assert row["status"] == "ok" and row["value"] > 0 and row["n"] == 3000
    assert isinstance(row["peers"]["ours.binary"], float)
    assert row["ratio"]["ours.binary"] == pytest.approx(row["value"] / row["peers"]["ours.binary"])
    assert row["ratio_spread"]["ours.binary"]["rounds"] == 2
    extra = row["extra"]
    # Both stores reopened in turn, each round led by the other one.
    assert extra["rounds"]["order"] == [["ours", "peer"], ["peer", "ours"]]
    assert len(extra["rounds"]["ours_ms"]) == len(extra["rounds"]["peer_ms"]) == 2
    assert extra["recovery_report"]["snapshot_used"]
    assert extra["binary_recovery_report"]["snapshot_used"]
    text = extra["text"]
    assert text["first_hits_hold_word"] is True
    assert text["first_index_complete"] is False or text["first_same_as_final"] is True
    assert text["final_matches"] > 0
    assert 80 <= text["mean_value_bytes"] <= 120
    assert text["recovery_report"]["snapshot_used"] and text["tail"] == 300
