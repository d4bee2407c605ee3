"""A seeded fault simulation of a 2-shard cluster: client processes on every primitive, kill -9.

Each test runs `harness.Sim`: client processes make seeded random calls on
their own runs and journal every call and its outcome, the harness kills a
shard or the coordinator at seeded moments and restarts what it killed, and
after every phase the model (`model.py`) reads the cluster back and checks
it against the journals. A finding names the run, the call and what was
read; the assertion message carries the seed and the command that reruns it.

The hostile tests mix values that must be refused into the clients' calls,
in groups, so that a group that finds a bug does not hide the others; the
last test runs the simulation on a cluster that keeps nothing, to prove the
checks notice.
"""

from __future__ import annotations

import pytest

from .conftest import env_int
from .harness import Sim, SimSpec

pytestmark = [pytest.mark.slow]

OPS = env_int("INMEM_SIM_OPS", 0)
KILLS = env_int("INMEM_SIM_KILLS", 0)
#: generous: a long run asked for through the environment gets its time
TIMEOUT = 240 + 2 * OPS + 30 * KILLS

HOSTILE = {
    "ttl": ("ttl_1e300", "ttl_10e30_int", "ttl_inf", "ttl_nan", "ttl_negative", "tx_ttl_1e300"),
    "reason": ("abort_surrogate_reason", "abort_huge_reason", "abort_nested_reason"),
    "oversized": ("tx_over_64mib", "value_too_large"),
    "nested": ("nested_kv", "nested_event", "nested_state", "nested_json", "nested_trace",
               "nested_tx", "nested_metadata"),
}


#: groups that find a bug not fixed yet; the mark goes when the fix lands
KNOWN_BUGS: dict = {}


def simulate(make_cluster, tmp_path, spec: SimSpec, test: str) -> None:
    sim = Sim(make_cluster, tmp_path, spec)
    try:
        findings = sim.run()
    except Exception as exc:  # the seed goes with every failure
        raise AssertionError(f"fault simulation {spec.rerun(test)} stopped: "
                             f"{type(exc).__name__}: {exc}") from exc
    finally:
        sim.close()
    print(sim.summary())
    assert not findings, (f"fault simulation {spec.rerun(test)}: {len(findings)} finding(s):\n"
                          + "\n".join(findings[:25]) + f"\n{sim.summary()}")


@pytest.mark.timeout(TIMEOUT)
def test_strict_cluster_keeps_every_acknowledged_write_through_kills(make_cluster, tmp_path,
                                                                     sim_seed):
    spec = SimSpec(seed=sim_seed, mode="strict", clients=3, ops_per_client=OPS or 120,
                   kills=KILLS or 3)
    simulate(make_cluster, tmp_path, spec,
             "test_strict_cluster_keeps_every_acknowledged_write_through_kills")


@pytest.mark.timeout(TIMEOUT)
def test_buffered_cluster_loses_at_most_the_newest_writes_of_a_run(make_cluster, tmp_path,
                                                                   sim_seed):
    spec = SimSpec(seed=sim_seed, mode="buffered", clients=2, ops_per_client=OPS or 90,
                   kills=KILLS or 2)
    simulate(make_cluster, tmp_path, spec,
             "test_buffered_cluster_loses_at_most_the_newest_writes_of_a_run")


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("group", [pytest.param(g, marks=KNOWN_BUGS.get(g, ()))
                                   for g in sorted(HOSTILE)])
def test_hostile_values_are_refused_and_cost_no_shard(make_cluster, tmp_path, sim_seed, group):
    kinds = HOSTILE[group]
    big = group == "oversized"
    spec = SimSpec(seed=sim_seed, mode="strict", clients=2, ops_per_client=OPS or 40,
                   kills=KILLS or 1, hostile=kinds,
                   # Room for a transaction over 64 MiB whose values are each under the limit,
                   # and time to refuse it (seconds on a busy machine).
                   max_message_bytes=(80 if big else 64) * 2**20,
                   request_timeout=30.0 if big else 3.0)
    simulate(make_cluster, tmp_path, spec,
             f"test_hostile_values_are_refused_and_cost_no_shard[{group}]")


@pytest.mark.timeout(TIMEOUT)
def test_hostile_values_are_refused_by_a_buffered_cluster(make_cluster, tmp_path, sim_seed):
    """The values a buffered shard could acknowledge and only fail to log later."""
    kinds = HOSTILE["ttl"] + HOSTILE["reason"] + HOSTILE["oversized"]
    spec = SimSpec(seed=sim_seed, mode="buffered", clients=2, ops_per_client=OPS or 40,
                   kills=KILLS or 1, hostile=kinds, max_message_bytes=80 * 2**20,
                   request_timeout=30.0)
    simulate(make_cluster, tmp_path, spec, "test_hostile_values_are_refused_by_a_buffered_cluster")


@pytest.mark.timeout(120)
def test_the_check_finds_the_losses_of_a_cluster_that_keeps_nothing(make_cluster, tmp_path):
    """The harness and model have teeth: an inmemory cluster forgets a killed shard's runs."""
    spec = SimSpec(seed=5, mode="strict", clients=2, ops_per_client=40, kills=1,
                   cluster_options={"durability": "inmemory"})
    sim = Sim(make_cluster, tmp_path, spec)
    try:
        findings = sim.run()
    finally:
        sim.close()
    lost = [f for f in findings if "acknowledged" in f and ("lost" in f or "does not exist" in f)]
    name = "test_the_check_finds_the_losses_of_a_cluster_that_keeps_nothing"
    assert lost, f"{spec.rerun(name)}: the kill of an inmemory shard went unnoticed: {findings}"
