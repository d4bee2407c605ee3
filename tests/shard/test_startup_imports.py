"""A shard process starts with what it needs: what importing the worker leaves out.

Start-up is part of every restart's time to ready. The checksum comes from
the crc32c extension without the package's metadata look-up, and the
embedded store's classes and the process-statistics module are imported
when used, not when a shard starts.
"""

from __future__ import annotations

import os
import subprocess
import sys

import crc32c

from inmem.checksum import crc32c as checksum

LEFT_OUT = ("importlib.metadata", "inmem.database", "inmem.embedded", "psutil", "crc32c")


def test_the_checksum_is_the_packages_crc32c():
    for data in (b"", b"a", b"123456789", bytes(range(256)) * 40):
        assert checksum(data) == crc32c.crc32c(data)
        assert checksum(data, 12345) == crc32c.crc32c(data, 12345)
    assert checksum(b"123456789") == 0xE3069283  # the CRC-32C check value


def test_importing_the_shard_worker_leaves_out_what_it_does_not_need():
    code = ("import sys, inmem.shard.worker\n"
            f"print(' '.join(m for m in {LEFT_OUT!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [], f"imported at start-up: {out.stdout.strip()}"


def test_the_package_still_offers_its_lazy_names():
    code = ("import inmem\n"
            "assert inmem.Database.__name__ == 'Database'\n"
            "assert 'Database' in dir(inmem) and 'Cluster' in dir(inmem)\n"
            "from inmem import Database, Cluster\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
