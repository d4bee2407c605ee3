"""The fault simulation's harness: a real cluster, client processes, seeded kills, and the checks.

`Sim(make_cluster, workdir, spec).run()` starts a 2-shard cluster, starts
`spec.clients` client processes (`sim_client.py`) and drives them in phases:
each phase every client does `ops_per_phase` operations, and the harness
kills one process at a seeded moment (a count of finished calls) of every
phase but the last: a shard (SIGKILL to its pid; the coordinator restarts
it) or the coordinator (SIGKILL; its shards stop on their own, and the
harness starts the cluster again on the same data directory). Between phases
the clients are idle, so the model (`model.py`) reads a quiet cluster.

Besides the model's findings, `run()` reports every shard restart the
harness did not cause (restarts counted by the coordinator, minus the
harness's kills in that coordinator's lifetime) and a coordinator that died
by itself. It returns the findings; the test asserts there are none.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from . import model
from .workload import count_done

CLIENT = Path(__file__).with_name("sim_client.py")
#: how long a restarted shard or cluster may take to be ready again
RESTART_S = 60.0
#: how long a phase may take before the harness gives up on a client
PHASE_S = 300.0


@dataclass
class SimSpec:
    seed: int
    mode: str                       # "strict" or "buffered"
    clients: int = 3
    ops_per_client: int = 120
    kills: int = 3                  # one per phase, the last phase has none
    hostile: tuple = ()             # hostile kinds (sim_client.HOSTILE), dealt to the clients
    max_value_bytes: int = 2**20
    max_message_bytes: int = 64 * 2**20
    request_timeout: float = 3.0
    cluster_options: dict = field(default_factory=dict)

    @property
    def phases(self) -> int:
        return self.kills + 1

    def rerun(self, test: str) -> str:
        return (f"seed={self.seed} (rerun: INMEM_SIM_SEED={self.seed} "
                f"INMEM_SIM_OPS={self.ops_per_client} INMEM_SIM_KILLS={self.kills} "
                f".venv/bin/python -m pytest -q 'tests/sim/test_fault_sim.py::{test}')")


class ClientProc:
    """One client process: commands on its stdin, "done" lines read by a thread."""

    def __init__(self, cid: int, argv: list, stderr_path: Path):
        self.cid = cid
        self.stderr_path = stderr_path
        with open(stderr_path, "ab") as err:
            self.proc = subprocess.Popen([sys.executable, str(CLIENT), *argv],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=err, text=True, start_new_session=True)
        self.lines: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_line(self, deadline: float) -> str | None:
        try:
            return self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            return None

    def wait_done(self, deadline: float) -> str | None:
        line = self.wait_line(deadline)
        return line if line and line.startswith("done") else None

    def stderr_tail(self, chars: int = 2000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("stop")
                self.proc.wait(20)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(10)


class Sim:
    def __init__(self, make_cluster, workdir: Path, spec: SimSpec):
        self.spec = spec
        self.workdir = Path(workdir)
        self.make_cluster = make_cluster
        self.rng = random.Random(f"{spec.seed}-harness")
        self.cluster = None
        self.clients: list = []
        self.journals: dict = {}
        self.findings: list = []
        self._seen: set = set()
        self.kills = [0, 0]       # harness kills per shard, in this coordinator's lifetime
        self.unexpected = [0, 0]  # restarts already reported, in this coordinator's lifetime
        self.log: list = []       # what happened, printed with the findings
        self.stats: dict = {}     # the model's counts at the last check

    # -- start and stop ----------------------------------------------------------------

    def start(self) -> None:
        s = self.spec
        options = dict(shards=2, durability=s.mode, max_value_bytes=s.max_value_bytes,
                       max_message_bytes=s.max_message_bytes, restart_backoff_ms=50,
                       restart_backoff_max_ms=500, snapshot_wal_bytes=64 * 1024,
                       segment_bytes_max=2**20)
        options.update(s.cluster_options)
        self.cluster = self.make_cluster(data_dir=self.workdir / "data", **options)
        (self.workdir / "clients").mkdir(parents=True, exist_ok=True)
        dealt = {c: [k for i, k in enumerate(s.hostile) if i % s.clients == c]
                 for c in range(s.clients)}
        for cid in range(s.clients):
            journal = self.workdir / "clients" / f"c{cid}.jsonl"
            self.journals[cid] = journal
            argv = ["--endpoint", self.cluster.endpoint, "--seed", str(s.seed), "--cid", str(cid),
                    "--journal", str(journal), "--mode", s.mode,
                    "--hostile", ",".join(dealt[cid]), "--total-ops", str(s.ops_per_client),
                    "--max-value-bytes", str(s.max_value_bytes),
                    "--max-message-bytes", str(s.max_message_bytes),
                    "--request-timeout", str(s.request_timeout)]
            self.clients.append(ClientProc(cid, argv, self.workdir / "clients" / f"c{cid}.err"))
        # All connected before the first phase, so a kill finds every client mid-phase.
        deadline = time.monotonic() + RESTART_S
        for client in self.clients:
            if client.wait_line(deadline) != "ready":
                raise AssertionError(f"client {client.cid} did not start:\n{client.stderr_tail()}")

    def close(self) -> None:
        for client in self.clients:
            client.stop()

    # -- the phases --------------------------------------------------------------------

    def plan(self) -> list:
        """One fault per phase but the last: ("shard", i) or ("coordinator",), in seeded order."""
        k = self.spec.kills
        kinds = ["shard", "coordinator"][:k] + [self.rng.choice(("shard", "shard", "coordinator"))
                                               for _ in range(max(k - 2, 0))]
        self.rng.shuffle(kinds)
        faults = [("shard", self.rng.randrange(2)) if kind == "shard" else ("coordinator",)
                  for kind in kinds]
        return faults + [None]

    def run(self) -> list:
        s = self.spec
        self.start()
        per_phase = max(s.ops_per_client // s.phases, 1)
        for phase, fault in enumerate(self.plan()):
            t0 = time.monotonic()
            base = self.done_calls()
            for client in self.clients:
                client.send(f"phase {phase} {per_phase}")
            deadline = time.monotonic() + PHASE_S
            if fault is not None:
                # Every client is this far into the phase: the kill hits all of them mid-way.
                self.wait_progress(base, self.rng.randint(per_phase // 5, per_phase * 7 // 10),
                                   deadline)
                self.inject(fault)
            for client in self.clients:
                if client.wait_done(deadline) is None:
                    self.find(f"client {client.cid} did not finish phase {phase}:\n"
                              f"{client.stderr_tail()}")
            self.check_processes()
            self.check(phase, final=fault is None)
            calls = sum(self.done_calls().values()) - sum(base.values())
            self.log.append(f"phase {phase}: fault {fault}, {calls} calls, "
                            f"{time.monotonic() - t0:.1f} s")
        return self.findings

    def done_calls(self) -> dict:
        """Finished calls per client, from the journals."""
        return {cid: count_done(path) if path.exists() else 0
                for cid, path in self.journals.items()}

    def wait_progress(self, base: dict, calls: int, deadline: float) -> None:
        """Wait until every client has finished `calls` calls since `base` (bounded)."""
        while time.monotonic() < deadline:
            done = self.done_calls()
            if all(done[cid] - base[cid] >= calls for cid in done):
                return
            if any(client.proc.poll() is not None for client in self.clients):
                return  # a client died: its phase report says so
            time.sleep(0.01)

    # -- faults ------------------------------------------------------------------------

    def inject(self, fault) -> None:
        if fault[0] == "shard":
            self.kill_shard(fault[1])
        else:
            self.kill_coordinator()

    def status(self) -> dict:
        return model.read(self.cluster.status)

    def wait_ready(self, what: str) -> None:
        deadline = time.monotonic() + RESTART_S
        while time.monotonic() < deadline:
            try:
                if self.cluster.status()["ready"]:
                    return
            except Exception:
                pass
            time.sleep(0.02)
        raise AssertionError(f"the cluster was not ready within {RESTART_S} s after {what}:\n"
                             f"{self.cluster.log_tail(40)}")

    def kill_shard(self, shard: int) -> None:
        self.wait_ready("the previous fault")
        pid = self.status()["shards"][shard]["pid"]
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return  # it died by itself just now: not the harness's doing
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, psutil.NoSuchProcess):
            return
        self.kills[shard] += 1
        deadline = time.monotonic() + RESTART_S
        while time.monotonic() < deadline:
            entry = self.status()["shards"][shard]
            if entry["state"] == "ready" and entry["pid"] != pid:
                return
            time.sleep(0.02)
        raise AssertionError(f"shard {shard} did not come back after the kill:\n"
                             f"{self.cluster.log_tail(40)}")

    def kill_coordinator(self) -> None:
        self.count_restarts()
        proc = self.cluster.proc
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # Its shards notice the parent is gone and stop on their own; wait for
        # that (bounded), then let Cluster.kill reap whatever is left.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.02)
        self.cluster.kill()
        self.cluster.start()
        self.kills = [0, 0]
        self.unexpected = [0, 0]

    # -- accounting and checks ---------------------------------------------------------

    def find(self, finding: str) -> None:
        if finding not in self._seen:
            self._seen.add(finding)
            self.findings.append(finding)

    def check_processes(self) -> None:
        if self.cluster.proc.poll() is not None:
            self.find(f"the coordinator exited by itself (code {self.cluster.proc.returncode}):\n"
                      f"{self.cluster.log_tail(40)}")
            self.cluster.kill()
            self.cluster.start()
            self.kills = [0, 0]
            self.unexpected = [0, 0]
        self.wait_ready("the phase")
        self.count_restarts()

    def count_restarts(self) -> None:
        """Report shard restarts that no harness kill explains."""
        for entry in self.status()["shards"]:
            i = entry["shard"]
            extra = entry["restarts"] - self.kills[i]
            if extra > self.unexpected[i]:
                self.find(f"shard {i} restarted {extra - self.unexpected[i]} time(s) without a "
                          f"harness kill (last exit {entry['last_exit']}: {entry['last_error']}); "
                          f"log:\n{self.exit_lines()}")
                self.unexpected[i] = extra

    def exit_lines(self) -> str:
        lines = self.cluster.log_tail(400).splitlines()
        keep = [line for line in lines if "exited (code" in line or "Error" in line
                or "internal error" in line or "CRITICAL" in line]
        return "\n".join(keep[-12:])

    def check(self, phase: int, final: bool) -> None:
        db = self.cluster.connect(timeout=30, request_timeout=10)
        try:
            if self.spec.mode == "strict":
                found = model.check_strict(db, self.journals, self.stats)
            else:
                found = model.check_buffered(db, self.journals, phase if final else -1,
                                             self.stats)
        finally:
            db.close()
        for finding in found:
            if finding not in self._seen:  # a finding stays true in every later check
                self._seen.add(finding)
                self.findings.append(f"[checked after phase {phase}] {finding}")

    def summary(self) -> str:
        outcomes = model.Journals.load(self.journals).outcomes()
        return "; ".join(self.log) + f"; outcomes {outcomes}; {self.stats}"
