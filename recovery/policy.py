"""Recovery policy: what a shard does with what it found on disk, as a table of named cases.

The recovery sequence gathers seven facts, all booleans, and asks `decide`
for the one case that matches them:

    newest_snapshot_ok      the newest snapshot file verified
    older_snapshot_ok       the newest did not, but an older one did
    any_snapshot            at least one snapshot file existed
    wal_tail_torn           the last WAL record is incomplete or fails its crc,
                            and nothing valid follows it (a crash mid-write)
    corruption_before_tail  a damaged record is followed by a valid one
    corrupt_within_budget   the damaged records number at most max_corrupt_entries
    wal_gap                 a WAL segment between the chosen snapshot's position
                            and the end of the log is missing

Every combination of the seven maps to exactly one row of CASES; the test
enumerates all 128. A case's `decision` is the ordered list of steps to take:
how to start (newest snapshot, an older one, or an empty state replayed from
WAL position 0), then how to treat the WAL, or a failure.

Why these answers:

- A snapshot that fails verification was renamed to *.broken.N by the store; an
  older one is safe to use because the WAL is kept down to the oldest retained
  snapshot's position. If none verifies, replay from position 0 is correct
  exactly when the WAL still starts at 0; otherwise the missing start shows up
  as a gap and recovery fails instead of inventing a state.
- A torn tail is the normal trace of a crash during a write: that record was
  never acknowledged in strict mode (its fsync did not return), so it is cut
  off (after a *.broken.N copy is kept) and recovery goes on.
- Damage followed by valid records is not a crash trace; it is corruption and
  stops recovery unless the operator set max_corrupt_entries.
- A gap always stops recovery: the records in it are gone and nothing on disk
  says what they did.

What skipping corrupt records costs (max_corrupt_entries > 0). The skipped
records are lost: every operation in them (a whole batch or transaction per
record) is gone, though it may have been acknowledged. Worse, every later
record is then applied to a state that lacks them. Those later operations were
validated, when they first ran, against the state that included the lost ones:
a CAS or a transaction that followed a skipped write succeeded against data
that the recovered store never had, so its effect may now sit on top of a
different value than the writer saw; an event chain may continue from a
head that is missing, and verify_chain will report it. The result is a state
that no single moment of the original history ever had. This is why the
budget is 0 by default and skipping is an explicit operator choice; the
recovery report counts what was skipped.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from inmem.recovery.errors import CorruptionError, PolicyInputError, PolicyTableError, WalGapError

INPUTS: tuple[str, ...] = (
    "newest_snapshot_ok",
    "older_snapshot_ok",
    "any_snapshot",
    "wal_tail_torn",
    "corruption_before_tail",
    "corrupt_within_budget",
    "wal_gap",
)

# How to start.
LOAD_NEWEST = "load_newest"
FALLBACK_OLDER_SNAPSHOT = "fallback_older_snapshot"
NO_SNAPSHOT_REPLAY_FROM_ZERO = "no_snapshot_replay_from_zero"
# What to do with the WAL after the starting point.
REPLAY_ALL = "replay_all"
TRUNCATE_TORN_TAIL = "truncate_torn_tail"
SKIP_CORRUPT_WITHIN_BUDGET = "skip_corrupt_within_budget"
# Stop.
FAIL_CORRUPTION = "fail_corruption"
FAIL_WAL_GAP = "fail_wal_gap"
INVALID_INPUTS = "invalid_inputs"

_FAILURES = frozenset({FAIL_CORRUPTION, FAIL_WAL_GAP, INVALID_INPUTS})


@dataclass(frozen=True)
class Case:
    """One row of the table: a pattern over INPUTS (None = any value) and its decision."""

    name: str
    pattern: tuple[bool | None, ...]
    decision: tuple[str, ...]

    def matches(self, values: tuple[bool, ...]) -> bool:
        return all(want is None or want == got for want, got in zip(self.pattern, values))

    @property
    def fails(self) -> bool:
        return self.decision[0] in _FAILURES

    @property
    def start(self) -> str | None:
        """LOAD_NEWEST, FALLBACK_OLDER_SNAPSHOT, NO_SNAPSHOT_REPLAY_FROM_ZERO, or None on failure."""
        return None if self.fails else self.decision[0]

    @property
    def truncate_tail(self) -> bool:
        return TRUNCATE_TORN_TAIL in self.decision

    @property
    def skip_corrupt(self) -> bool:
        return SKIP_CORRUPT_WITHIN_BUDGET in self.decision

    def raise_failure(self, *, path, offset: int, reason: str, skippable: bool = True) -> None:
        """Raise the typed error for a failing case; do nothing for the others.

        `skippable`: whether a larger corruption budget would have skipped the damage."""
        if self.decision[0] == FAIL_CORRUPTION:
            raise CorruptionError(path, offset, reason, skippable)
        if self.decision[0] == FAIL_WAL_GAP:
            raise WalGapError(path, offset, reason)
        if self.decision[0] == INVALID_INPUTS:
            raise PolicyInputError(f"impossible recovery inputs ({self.name}): {reason}")


def _case(name: str, pattern: str, *decision: str) -> Case:
    cells = pattern.split()
    if len(cells) != len(INPUTS) or any(c not in "TF_" for c in cells):
        raise PolicyTableError(f"case {name}: pattern {pattern!r} must be {len(INPUTS)} cells of T, F or _")
    return Case(name, tuple({"T": True, "F": False, "_": None}[c] for c in cells), decision)


# Columns, in INPUTS order:
#   newest_ok older_ok any_snapshot | tail_torn corrupt_before_tail within_budget wal_gap
# T = true, F = false, _ = either.
CASES: list[Case] = [
    # Facts that cannot all be true: a snapshot verified, yet none existed.
    _case("invalid_newest_ok_without_snapshot",     "T _ F   _ _ _ _", INVALID_INPUTS),
    _case("invalid_older_ok_without_snapshot",      "F T F   _ _ _ _", INVALID_INPUTS),

    # A missing segment stops recovery whatever else was found.
    _case("wal_gap_after_snapshot",                 "_ _ T   _ _ _ T", FAIL_WAL_GAP),
    _case("wal_gap_without_snapshot",               "F F F   _ _ _ T", FAIL_WAL_GAP),

    # Mid-log damage beyond the skip budget stops recovery.
    _case("corruption_over_budget_after_snapshot",  "_ _ T   _ T F F", FAIL_CORRUPTION),
    _case("corruption_over_budget_without_snapshot", "F F F   _ T F F", FAIL_CORRUPTION),

    # The newest snapshot verified.
    _case("newest_clean_wal",                       "T _ T   F F _ F", LOAD_NEWEST, REPLAY_ALL),
    _case("newest_torn_tail",                       "T _ T   T F _ F", LOAD_NEWEST, TRUNCATE_TORN_TAIL),
    _case("newest_skip_corrupt",                    "T _ T   F T T F", LOAD_NEWEST, SKIP_CORRUPT_WITHIN_BUDGET),
    _case("newest_skip_corrupt_torn_tail",          "T _ T   T T T F",
          LOAD_NEWEST, SKIP_CORRUPT_WITHIN_BUDGET, TRUNCATE_TORN_TAIL),

    # The newest is broken (now *.broken); an older one verified.
    _case("older_clean_wal",                        "F T T   F F _ F", FALLBACK_OLDER_SNAPSHOT, REPLAY_ALL),
    _case("older_torn_tail",                        "F T T   T F _ F",
          FALLBACK_OLDER_SNAPSHOT, TRUNCATE_TORN_TAIL),
    _case("older_skip_corrupt",                     "F T T   F T T F",
          FALLBACK_OLDER_SNAPSHOT, SKIP_CORRUPT_WITHIN_BUDGET),
    _case("older_skip_corrupt_torn_tail",           "F T T   T T T F",
          FALLBACK_OLDER_SNAPSHOT, SKIP_CORRUPT_WITHIN_BUDGET, TRUNCATE_TORN_TAIL),

    # Snapshots existed but none verified: the WAL must hold everything from 0
    # (else the gap rows above match).
    _case("all_broken_clean_wal",                   "F F T   F F _ F", NO_SNAPSHOT_REPLAY_FROM_ZERO, REPLAY_ALL),
    _case("all_broken_torn_tail",                   "F F T   T F _ F",
          NO_SNAPSHOT_REPLAY_FROM_ZERO, TRUNCATE_TORN_TAIL),
    _case("all_broken_skip_corrupt",                "F F T   F T T F",
          NO_SNAPSHOT_REPLAY_FROM_ZERO, SKIP_CORRUPT_WITHIN_BUDGET),
    _case("all_broken_skip_corrupt_torn_tail",      "F F T   T T T F",
          NO_SNAPSHOT_REPLAY_FROM_ZERO, SKIP_CORRUPT_WITHIN_BUDGET, TRUNCATE_TORN_TAIL),

    # No snapshot at all: a new shard, or one that never snapshotted.
    _case("no_snapshot_clean_wal",                  "F F F   F F _ F", NO_SNAPSHOT_REPLAY_FROM_ZERO, REPLAY_ALL),
    _case("no_snapshot_torn_tail",                  "F F F   T F _ F",
          NO_SNAPSHOT_REPLAY_FROM_ZERO, TRUNCATE_TORN_TAIL),
    _case("no_snapshot_skip_corrupt",               "F F F   F T T F",
          NO_SNAPSHOT_REPLAY_FROM_ZERO, SKIP_CORRUPT_WITHIN_BUDGET),
    _case("no_snapshot_skip_corrupt_torn_tail",     "F F F   T T T F",
          NO_SNAPSHOT_REPLAY_FROM_ZERO, SKIP_CORRUPT_WITHIN_BUDGET, TRUNCATE_TORN_TAIL),
]


def _values(inputs: dict) -> tuple[bool, ...]:
    missing = [name for name in INPUTS if name not in inputs]
    unknown = sorted(set(inputs) - set(INPUTS))
    if missing or unknown:
        raise TypeError(f"decide() needs exactly {', '.join(INPUTS)}; "
                        f"missing {missing or 'none'}, unknown {unknown or 'none'}")
    values = []
    for name in INPUTS:
        value = inputs[name]
        if not isinstance(value, int):  # bool is an int; counts of 0/1 are accepted too
            raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
        values.append(bool(value))
    return tuple(values)


def matching_cases(**inputs) -> list[Case]:
    """Every case whose pattern matches; a correct table always gives exactly one."""
    values = _values(inputs)
    return [case for case in CASES if case.matches(values)]


def decide(**inputs) -> Case:
    """The one case for these facts.

    Raises PolicyTableError if the table matches zero or several cases (a bug
    in CASES), and PolicyInputError if the facts contradict each other.
    """
    found = matching_cases(**inputs)
    if len(found) != 1:
        names = ", ".join(case.name for case in found) or "none"
        raise PolicyTableError(f"recovery policy matched {len(found)} cases ({names}) for {inputs}")
    case = found[0]
    if case.decision[0] == INVALID_INPUTS:
        raise PolicyInputError(f"impossible recovery inputs ({case.name}): {inputs}")
    return case


def all_input_combinations():
    """Every assignment of the inputs, as keyword dicts (2 ** len(INPUTS) of them)."""
    for values in itertools.product((False, True), repeat=len(INPUTS)):
        yield dict(zip(INPUTS, values))
