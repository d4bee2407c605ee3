"""The mmap threshold a durable store holds fixed in its process (shard.allocator).

Each case runs in a fresh interpreter: the setting is the whole process's and
is made once. What is observed is where glibc puts a 2 MiB buffer after a
4 MiB one was freed: with its dynamic threshold, the free raised the
threshold to 4 MiB and the buffer comes from the heap (`[heap]` in
/proc/self/maps); with the threshold held at 1 MiB it gets a mapping of its
own.
"""

import os
import platform
import subprocess
import sys
import textwrap

import pytest

import inmem
from inmem.errors import InvalidOption

glibc = pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
                           reason="the mmap threshold is glibc's")

PROBE = textwrap.dedent("""
    import ctypes, json, sys
    import inmem
    from inmem.shard.allocator import held_mmap_threshold

    def heap_range():
        for line in open("/proc/self/maps"):
            if line.rstrip().endswith("[heap]"):
                lo, hi = line.split()[0].split("-")
                return int(lo, 16), int(hi, 16)
        return 0, 0

    options = json.loads(sys.argv[2])
    db = inmem.open(sys.argv[1], durability="buffered", snapshot_huge_pages=False, **options)
    big = bytearray(4 << 20)
    del big                           # a freed mapping: glibc raises its threshold to 4 MiB
    buf = bytearray(2 << 20)
    at = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    lo, hi = heap_range()
    # A 256 KiB buffer (what msgpack.packb allocates per call) freed at the heap's
    # top: with the trim threshold frozen at 128 KiB the heap shrinks at once.
    sbrk = ctypes.CDLL(None).sbrk
    sbrk.restype = ctypes.c_void_p
    sbrk.argtypes = [ctypes.c_long]
    del buf
    small = bytearray(256 << 10)
    grown = sbrk(0)
    del small
    print(json.dumps({"in_heap": lo <= at < hi, "held": held_mmap_threshold(),
                      "trimmed": sbrk(0) < grown}))
    db.close()
""")


def probe(tmp_path, options: dict, env_extra: dict | None = None) -> dict:
    import json
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(env_extra or {})
    root = os.path.dirname(os.path.dirname(inmem.__file__))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "db"), json.dumps(options)],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc
def test_a_durable_store_holds_the_threshold_so_large_buffers_stay_mapped(tmp_path):
    got = probe(tmp_path, {})
    assert got == {"in_heap": False, "held": 1 << 20, "trimmed": False}


@glibc
@pytest.mark.parametrize("off", [None, 0])
def test_none_or_zero_leaves_the_dynamic_threshold_of_glibc(tmp_path, off):
    got = probe(tmp_path, {"malloc_mmap_threshold": off})
    assert got["in_heap"] is True and got["held"] is None


@glibc
def test_the_environment_variable_of_glibc_wins(tmp_path):
    got = probe(tmp_path, {}, {"MALLOC_MMAP_THRESHOLD_": str(8 << 20)})
    # 8 MiB asked for by the process: the 2 MiB buffer is a heap one, and nothing was set.
    assert got["in_heap"] is True and got["held"] is None


@glibc
def test_a_buffer_of_a_packb_freed_at_the_top_is_kept_for_the_next(tmp_path):
    # The check can fail: with only the mmap threshold set, the trim threshold
    # stays at 128 KiB and the heap shrinks after the free.
    got = probe(tmp_path, {}, {"MALLOC_TRIM_THRESHOLD_": str(128 << 10)})
    assert got["trimmed"] is True
    assert probe(tmp_path, {})["trimmed"] is False


def test_the_option_is_checked(tmp_path):
    with pytest.raises(InvalidOption, match="malloc_mmap_threshold"):
        inmem.open(tmp_path / "a", durability="buffered", malloc_mmap_threshold=-1)
    with pytest.raises(InvalidOption, match="malloc_mmap_threshold"):
        inmem.open(tmp_path / "b", durability="buffered", malloc_mmap_threshold="128k")
