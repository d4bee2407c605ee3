"""The recovery decision table: every input combination matches exactly one case."""

from __future__ import annotations

import itertools

import pytest

from inmem.errors import CorruptionError as PublicCorruptionError
from inmem.recovery import policy
from inmem.recovery.errors import CorruptionError, PolicyInputError, PolicyTableError, WalGapError
from inmem.recovery.policy import (
    FAIL_CORRUPTION,
    FAIL_WAL_GAP,
    FALLBACK_OLDER_SNAPSHOT,
    INPUTS,
    LOAD_NEWEST,
    NO_SNAPSHOT_REPLAY_FROM_ZERO,
    REPLAY_ALL,
    SKIP_CORRUPT_WITHIN_BUDGET,
    TRUNCATE_TORN_TAIL,
    decide,
)


def facts(newest=False, older=False, any_=False, torn=False, corrupt=False, budget=False, gap=False):
    return dict(newest_snapshot_ok=newest, older_snapshot_ok=older, any_snapshot=any_,
                wal_tail_torn=torn, corruption_before_tail=corrupt,
                corrupt_within_budget=budget, wal_gap=gap)


def impossible(inputs) -> bool:
    return not inputs["any_snapshot"] and (inputs["newest_snapshot_ok"] or inputs["older_snapshot_ok"])


def every_combination():
    for values in itertools.product((False, True), repeat=len(INPUTS)):
        yield dict(zip(INPUTS, values))


def test_every_combination_matches_exactly_one_case():
    combinations = list(every_combination())
    assert len(combinations) == 2 ** 7
    for inputs in combinations:
        found = policy.matching_cases(**inputs)
        assert len(found) == 1, (inputs, [c.name for c in found])


def test_decide_returns_a_case_for_every_possible_combination_and_refuses_the_rest():
    for inputs in every_combination():
        if impossible(inputs):
            with pytest.raises(PolicyInputError):
                decide(**inputs)
        else:
            case = decide(**inputs)
            assert case in policy.CASES


def test_every_case_is_reachable_and_named_once():
    names = [case.name for case in policy.CASES]
    assert len(names) == len(set(names))
    reached = {policy.matching_cases(**inputs)[0].name for inputs in every_combination()}
    assert reached == set(names)


def test_the_helper_yields_the_same_combinations():
    assert list(policy.all_input_combinations()) == list(every_combination())


@pytest.mark.parametrize("inputs, decision", [
    (facts(newest=True, any_=True), (LOAD_NEWEST, REPLAY_ALL)),
    (facts(newest=True, older=True, any_=True), (LOAD_NEWEST, REPLAY_ALL)),
    (facts(newest=True, any_=True, torn=True), (LOAD_NEWEST, TRUNCATE_TORN_TAIL)),
    (facts(older=True, any_=True), (FALLBACK_OLDER_SNAPSHOT, REPLAY_ALL)),
    (facts(older=True, any_=True, torn=True), (FALLBACK_OLDER_SNAPSHOT, TRUNCATE_TORN_TAIL)),
    (facts(), (NO_SNAPSHOT_REPLAY_FROM_ZERO, REPLAY_ALL)),
    (facts(any_=True), (NO_SNAPSHOT_REPLAY_FROM_ZERO, REPLAY_ALL)),
    (facts(torn=True), (NO_SNAPSHOT_REPLAY_FROM_ZERO, TRUNCATE_TORN_TAIL)),
    (facts(newest=True, any_=True, corrupt=True, budget=True), (LOAD_NEWEST, SKIP_CORRUPT_WITHIN_BUDGET)),
    (facts(newest=True, any_=True, corrupt=True, budget=True, torn=True),
     (LOAD_NEWEST, SKIP_CORRUPT_WITHIN_BUDGET, TRUNCATE_TORN_TAIL)),
    (facts(newest=True, any_=True, corrupt=True), (FAIL_CORRUPTION,)),
    (facts(corrupt=True, torn=True), (FAIL_CORRUPTION,)),
    (facts(newest=True, any_=True, gap=True), (FAIL_WAL_GAP,)),
    (facts(any_=True, gap=True), (FAIL_WAL_GAP,)),
    (facts(gap=True, corrupt=True, budget=True), (FAIL_WAL_GAP,)),
    # The skip budget only matters when there is something to skip.
    (facts(newest=True, any_=True, budget=True), (LOAD_NEWEST, REPLAY_ALL)),
])
def test_spot_checks(inputs, decision):
    assert decide(**inputs).decision == decision


def test_invariants_over_all_possible_inputs():
    for inputs in every_combination():
        if impossible(inputs):
            continue
        case = decide(**inputs)
        if inputs["wal_gap"]:
            assert case.decision == (FAIL_WAL_GAP,)
        elif inputs["corruption_before_tail"] and not inputs["corrupt_within_budget"]:
            assert case.decision == (FAIL_CORRUPTION,)
        else:
            assert not case.fails
            assert case.truncate_tail == inputs["wal_tail_torn"]
            assert case.skip_corrupt == inputs["corruption_before_tail"]
            expected_start = (LOAD_NEWEST if inputs["newest_snapshot_ok"]
                              else FALLBACK_OLDER_SNAPSHOT if inputs["older_snapshot_ok"]
                              else NO_SNAPSHOT_REPLAY_FROM_ZERO)
            assert case.start == expected_start


def test_inputs_must_be_complete_and_known():
    with pytest.raises(TypeError, match="missing"):
        decide(newest_snapshot_ok=True)
    with pytest.raises(TypeError, match="unknown"):
        decide(**facts(), tail_torn=True)
    with pytest.raises(TypeError, match="wal_gap"):
        decide(**{**facts(), "wal_gap": "no"})
    assert decide(**{**facts(), "wal_tail_torn": 1}).truncate_tail


def test_an_overlapping_table_is_refused(monkeypatch):
    duplicate = policy._case("duplicate", "_ _ _   _ _ _ T", FAIL_WAL_GAP)
    monkeypatch.setattr(policy, "CASES", policy.CASES + [duplicate])
    with pytest.raises(PolicyTableError, match="matched 2 cases"):
        decide(**facts(gap=True))


def test_a_table_with_a_hole_is_refused(monkeypatch):
    monkeypatch.setattr(policy, "CASES", [c for c in policy.CASES if c.name != "no_snapshot_clean_wal"])
    with pytest.raises(PolicyTableError, match="matched 0 cases"):
        decide(**facts())


def test_bad_pattern_is_refused():
    with pytest.raises(PolicyTableError):
        policy._case("short", "T F", LOAD_NEWEST)


def test_failing_cases_raise_typed_errors_naming_file_and_offset():
    with pytest.raises(CorruptionError) as info:
        decide(**facts(corrupt=True)).raise_failure(path="wal/0000000003.seg", offset=4096,
                                                    reason="crc mismatch followed by valid records")
    err = info.value
    assert (err.path, err.offset) == ("wal/0000000003.seg", 4096)
    assert "wal/0000000003.seg" in str(err) and "4096" in str(err) and "max_corrupt_entries" in str(err)
    assert isinstance(err, PublicCorruptionError)

    with pytest.raises(WalGapError) as info:
        decide(**facts(gap=True)).raise_failure(path="wal", offset=500, reason="segment 4 missing")
    assert info.value.offset == 500 and "segment 4 missing" in str(info.value)

    decide(**facts()).raise_failure(path="wal", offset=0, reason="")  # a passing case raises nothing
