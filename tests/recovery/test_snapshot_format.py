"""The snapshot file format: round trips, and hand-built damaged files byte by byte."""

from __future__ import annotations

import io
import os
import pickle
import struct

import crc32c
import msgpack
import pytest

from inmem.errors import CorruptionError as PublicCorruptionError
from inmem.recovery import snapshot_format as sf
from inmem.recovery.errors import SnapshotCorrupt, SnapshotUnsupported

SECTIONS = [
    (sf.RUNS, msgpack.packb({"r1": {"name": "a"}})),
    (sf.KV, msgpack.packb({"r1": {"k": [b"v", 1, 2]}}) * 50),
    (sf.EVENTS, b""),
    (sf.META, bytes(range(256)) * 3),
]
COUNTS = {"runs": 1, "keys": 1, "events": 0}


def build(sections=SECTIONS, counts=COUNTS, created_at=1_700_000_000_000_000,
          wal_position=4242, shard=3) -> bytes:
    buf = io.BytesIO()
    written = sf.write_snapshot_file(buf, created_at=created_at, wal_position=wal_position,
                                     shard=shard, counts=counts, sections=sections)
    data = buf.getvalue()
    assert written == len(data)
    return data


def seal(body: bytes) -> bytes:
    """Append a correct trailer, so the structure checks (not the crc) must catch the flaw."""
    return body + struct.pack("<I", crc32c.crc32c(body))


def raw_header(version=1, flags=0, created_at=5, wal_position=7, shard=0,
               section_count=0, counts_bytes=b"\x80", magic=sf.MAGIC) -> bytes:
    return struct.pack("<8sHHqQIII", magic, version, flags, created_at, wal_position, shard,
                       section_count, len(counts_bytes)) + counts_bytes


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


def write_file(tmp_path, data: bytes, name="x.snap") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


# ---------------------------------------------------------------------------
# round trips


def test_round_trip_several_sections_through_a_file(tmp_path):
    path = tmp_path / "a.snap"
    with open(path, "wb") as f:
        written = sf.write_snapshot_file(f, created_at=123, wal_position=99, shard=7,
                                         counts=COUNTS, sections=SECTIONS)
    assert written == path.stat().st_size
    snap = sf.read_snapshot_file(path)
    assert snap.header == sf.SnapshotHeader(format_version=1, flags=0, created_at=123, wal_position=99,
                                            shard=7, section_count=4, counts=COUNTS)
    assert snap.crc_ok is True
    assert {t: bytes(b) for t, b in snap.sections.items()} == dict(SECTIONS)
    assert list(snap.sections) == [t for t, _ in SECTIONS]
    assert msgpack.unpackb(snap.sections[sf.RUNS]) == {"r1": {"name": "a"}}
    assert snap.path == str(path) and snap.size == written


def test_round_trip_through_a_raw_fd_and_bytes_like_bodies(tmp_path):
    path = tmp_path / "fd.snap"
    sections = [(sf.KV, bytearray(b"kv" * 1000)), (sf.JSON, memoryview(b"json-body")),
                (sf.JOURNAL, memoryview(struct.pack("<4I", 1, 2, 3, 4)).cast("I"))]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        written = sf.write_snapshot_file(fd, created_at=-5, wal_position=0, shard=0,
                                         counts={}, sections=sections)
    finally:
        os.close(fd)
    snap = sf.read_snapshot_file(path)
    assert written == path.stat().st_size
    assert snap.header.created_at == -5 and snap.header.counts == {}
    assert bytes(snap.sections[sf.KV]) == b"kv" * 1000
    assert bytes(snap.sections[sf.JSON]) == b"json-body"
    assert bytes(snap.sections[sf.JOURNAL]) == struct.pack("<4I", 1, 2, 3, 4)


def test_trailer_is_crc32c_of_everything_before_it():
    data = build()
    assert struct.unpack("<I", data[-4:])[0] == crc32c.crc32c(data[:-4])
    assert data[:8] == b"INMEMSNP"
    assert struct.unpack_from("<HH", data, 8) == (1, 0)


def test_fixed_layout_offsets_match_the_docstring():
    data = build(sections=[(sf.KV, b"abc")], counts={"keys": 2}, created_at=11, wal_position=22, shard=33)
    counts = msgpack.packb({"keys": 2})
    assert struct.unpack_from("<qQIII", data, 12) == (11, 22, 33, 1, len(counts))
    assert data[40:40 + len(counts)] == counts
    pos = 40 + len(counts)
    assert struct.unpack_from("<BQ", data, pos) == (sf.KV, 3)
    assert data[pos + 9:pos + 12] == b"abc"
    assert len(data) == pos + 12 + 4


def test_partial_writes_of_an_unbuffered_target_are_completed():
    class Dribble(io.RawIOBase):
        def __init__(self):
            self.out = bytearray()

        def writable(self):
            return True

        def write(self, b):
            chunk = bytes(memoryview(b)[:7])
            self.out += chunk
            return len(chunk)

    target = Dribble()
    written = sf.write_snapshot_file(target, created_at=123, wal_position=4242, shard=3,
                                     counts=COUNTS, sections=SECTIONS)
    assert bytes(target.out) == build(created_at=123) and written == len(target.out)


def test_same_state_gives_identical_bytes():
    assert build(counts={"b": 1, "a": 2}) == build(counts={"a": 2, "b": 1})


@pytest.mark.parametrize("kwargs, error", [
    ({"sections": [(sf.KV, b"a"), (sf.KV, b"b")]}, ValueError),
    ({"sections": [(0, b"a")]}, ValueError),
    ({"sections": [(256, b"a")]}, ValueError),
    ({"sections": [(sf.KV, "text")]}, TypeError),
    ({"sections": [sf.KV]}, TypeError),
    ({"wal_position": -1}, ValueError),
    ({"wal_position": 1 << 64}, ValueError),
    ({"shard": 1 << 32}, ValueError),
    ({"created_at": 1 << 63}, ValueError),
    ({"created_at": 1.5}, TypeError),
    ({"counts": {"keys": -1}}, ValueError),
    ({"counts": {1: 1}}, TypeError),
    ({"counts": [("keys", 1)]}, TypeError),
])
def test_writer_rejects_bad_arguments_before_writing(kwargs, error):
    args = dict(created_at=1, wal_position=1, shard=0, counts={}, sections=[])
    args.update(kwargs)
    buf = io.BytesIO()
    with pytest.raises(error):
        sf.write_snapshot_file(buf, **args)
    assert buf.getvalue() == b""


# ---------------------------------------------------------------------------
# damaged files


def assert_corrupt(path, offset=None, reason_part=None, verify=True) -> SnapshotCorrupt:
    with pytest.raises(SnapshotCorrupt) as info:
        sf.read_snapshot_file(path, verify=verify)
    err = info.value
    assert err.path == str(path)
    if offset is not None:
        assert err.offset == offset, err.reason
    if reason_part is not None:
        assert reason_part in err.reason
    return err


def test_flipped_bit_in_header_fields_fails_the_crc(tmp_path):
    data = build()
    for offset in (12, 20, 28, 32, 36, 40):  # created_at, wal_position, shard, count, counts length, counts
        path = write_file(tmp_path, flip(data, offset), f"h{offset}.snap")
        assert_corrupt(path, len(data) - 4, "crc32c mismatch")


def test_flipped_bit_in_magic_is_bad_magic(tmp_path):
    path = write_file(tmp_path, flip(build(), 3))
    assert_corrupt(path, 0, "bad magic")


def test_flipped_bit_in_version_is_corruption_with_a_hint(tmp_path):
    path = write_file(tmp_path, flip(build(), 8, 1))
    err = assert_corrupt(path, reason_part="crc32c mismatch")
    assert "version field also reads 3" in err.reason


def test_flipped_bit_in_a_section_body(tmp_path):
    data = build()
    snap = sf.parse_snapshot(data)
    body_at = snap.section_offsets[sf.KV] + 17
    path = write_file(tmp_path, flip(data, body_at, 5))
    assert_corrupt(path, len(data) - 4, "crc32c mismatch")
    # Without the checksum the structure is still intact: only the crc can see this flip.
    snap = sf.read_snapshot_file(path, verify=False)
    assert snap.crc_ok is None and bytes(snap.sections[sf.KV]) != dict(SECTIONS)[sf.KV]


def test_flipped_bit_in_a_section_length(tmp_path):
    data = build()
    snap = sf.parse_snapshot(data)
    length_at = snap.section_offsets[sf.KV] - 8
    damaged = flip(data, length_at + 3, 7)   # adds 2**31 to the length
    path = write_file(tmp_path, damaged)
    assert_corrupt(path, len(data) - 4, "crc32c mismatch")
    assert_corrupt(path, length_at, "claims", verify=False)


def test_flipped_bit_in_the_trailer(tmp_path):
    data = build()
    for bit in (0, 31):
        path = write_file(tmp_path, flip(data, len(data) - 4 + bit // 8, bit % 8), f"t{bit}.snap")
        assert_corrupt(path, len(data) - 4, "crc32c mismatch")
        # The structure is fine: verify=False reads it, reporting the stored trailer.
        assert sf.read_snapshot_file(path, verify=False).crc != crc32c.crc32c(data[:-4])


def test_truncated_at_every_offset(tmp_path):
    data = build(sections=[(sf.RUNS, b"r" * 20), (sf.KV, b"k" * 30)])
    path = tmp_path / "trunc.snap"
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        err = assert_corrupt(path)
        # Structure checks alone also catch every truncation.
        assert_corrupt(path, verify=False)
        assert str(path) in str(err)


def test_empty_file(tmp_path):
    path = write_file(tmp_path, b"")
    assert_corrupt(path, 0, "empty")


@pytest.mark.parametrize("size", [1, 8, 44, 4096, 10_000])
def test_file_of_zeros(tmp_path, size):
    path = write_file(tmp_path, bytes(size))
    assert_corrupt(path, 0, "zero bytes")


def test_wrong_magic(tmp_path):
    path = write_file(tmp_path, b"SQLite f" + build()[8:])
    assert_corrupt(path, 0, "bad magic b'SQLite f'")


def test_future_format_version_is_unsupported_not_corrupt(tmp_path):
    path = write_file(tmp_path, seal(raw_header(version=2)))
    with pytest.raises(SnapshotUnsupported) as info:
        sf.read_snapshot_file(path)
    err = info.value
    assert (err.version, err.offset, err.path) == (2, 8, path)
    assert "format version 2 is newer than the version this build reads (1)" in str(err)
    assert not isinstance(err, SnapshotCorrupt)


def test_unknown_flags_are_unsupported(tmp_path):
    path = write_file(tmp_path, seal(raw_header(flags=0x0004)))
    with pytest.raises(SnapshotUnsupported, match="flags 0x0004"):
        sf.read_snapshot_file(path)


def test_minimal_valid_file_has_no_sections(tmp_path):
    path = write_file(tmp_path, seal(raw_header()))
    snap = sf.read_snapshot_file(path)
    assert snap.sections == {} and snap.header.counts == {} and snap.header.wal_position == 7


@pytest.mark.parametrize("body, offset, reason", [
    # A section length of 2**64-1 must be rejected by arithmetic, not by allocating.
    (raw_header(section_count=1) + struct.pack("<BQ", sf.KV, (1 << 64) - 1), 42, "claims"),
    (raw_header(section_count=1) + struct.pack("<BQ", sf.KV, 4) + b"abc", 42, "claims"),
    (raw_header(section_count=0xFFFF_FFFF), 32, "section count"),
    (raw_header(section_count=2) + struct.pack("<BQ", sf.KV, 0) + b"\x00" * 9, 50, "type 0"),
    (raw_header(section_count=2) + struct.pack("<BQ", sf.KV, 1) + b"a"
     + struct.pack("<BQ", sf.KV, 1) + b"b", 51, "appears twice"),
    (raw_header(section_count=1) + struct.pack("<BQ", sf.KV, 1) + b"a" + b"junk", 51, "4 unexplained byte(s) after"),
    (raw_header(section_count=0) + b"\x00", 41, "1 unexplained byte(s) after"),
    (raw_header(counts_bytes=b"\xc1"), 40, "not valid msgpack"),
    (raw_header(counts_bytes=msgpack.packb([1, 2])), 40, "not a map"),
    (raw_header(counts_bytes=msgpack.packb({"keys": "many"})), 40, "not a map"),
    (raw_header()[:36] + struct.pack("<I", 1 << 21), 36, "counts length"),
    (raw_header()[:36] + struct.pack("<I", 100) + b"\x80", 36, "counts length"),
])
def test_structural_damage_behind_a_valid_crc(tmp_path, body, offset, reason):
    path = write_file(tmp_path, seal(body))
    assert_corrupt(path, offset, reason)


def test_unknown_section_type_is_kept_for_newer_primitives(tmp_path):
    data = build(sections=[(sf.KV, b"a"), (200, b"later primitive")])
    snap = sf.parse_snapshot(data)
    assert bytes(snap.sections[200]) == b"later primitive"
    assert sf.section_name(200) == "UNKNOWN(200)" and sf.section_name(sf.KV) == "KV"


def test_error_names_the_file_and_the_next_step_and_survives_pickling(tmp_path):
    path = write_file(tmp_path, flip(build(), 100))
    err = assert_corrupt(path)
    assert path in str(err) and "inmem snapshot verify" in str(err) and ".broken" in str(err)
    assert isinstance(err, PublicCorruptionError)
    again = pickle.loads(pickle.dumps(err))
    assert (type(again), again.path, again.offset, again.reason, str(again)) == \
        (SnapshotCorrupt, err.path, err.offset, err.reason, str(err))


def test_sections_are_views_of_one_buffer_not_copies():
    data = build()
    snap = sf.parse_snapshot(data)
    for body in snap.sections.values():
        assert isinstance(body, memoryview) and body.obj is data


# ---------------------------------------------------------------------------
# inmem snapshot verify


def run_verify(*argv):
    out = io.StringIO()
    code = sf.verify_main(list(argv), out=out)
    return code, out.getvalue()


def test_verify_valid_file(tmp_path):
    path = write_file(tmp_path, build())
    code, text = run_verify(path)
    assert code == 0
    assert "wal_position: 4242" in text and "shard: 3" in text
    assert "counts: events=0, keys=1, runs=1" in text
    assert f"section KV (type 2): {len(dict(SECTIONS)[sf.KV])} bytes" in text
    assert "section EVENTS (type 3): 0 bytes" in text
    assert "crc32c: ok" in text and text.rstrip().endswith("result: valid")


def test_verify_bad_crc_still_shows_sections(tmp_path):
    data = build()
    path = write_file(tmp_path, flip(data, len(data) - 10))
    code, text = run_verify(path)
    assert code == 2
    assert "section META" in text and "crc32c: BAD" in text and "result: INVALID" in text


def test_verify_broken_structure(tmp_path):
    data = build()
    snap = sf.parse_snapshot(data)
    path = write_file(tmp_path, flip(data, snap.section_offsets[sf.KV] - 2, 6))
    code, text = run_verify(path)
    assert code == 2 and "structure: BAD" in text and "crc32c: BAD" in text


@pytest.mark.parametrize("content, expected", [
    (b"", "empty"),
    (bytes(64), "zero bytes"),
    (seal(raw_header(version=9)), "UNSUPPORTED"),
])
def test_verify_unreadable_files(tmp_path, content, expected):
    code, text = run_verify(write_file(tmp_path, content))
    assert code == 2 and expected in text


def test_verify_missing_file_and_bad_usage(tmp_path):
    code, text = run_verify(str(tmp_path / "nope.snap"))
    assert code == 2 and "cannot read" in text
    assert sf.verify_main([], out=io.StringIO()) == 2


@pytest.mark.parametrize("size", [sf.MAP_MIN_BYTES - 100, sf.MAP_MIN_BYTES + 4096])
def test_a_file_read_or_mapped_gives_the_same_sections_and_the_same_damage(tmp_path, size):
    # Files from MAP_MIN_BYTES on are mapped rather than read; both ways agree,
    # bit flips included.
    body = os.urandom(size)
    sections = [(sf.RUNS, msgpack.packb([])), (sf.KV, body)]
    data = build(sections)
    path = write_file(tmp_path, data)
    snap = sf.read_snapshot_file(path)
    assert snap.crc_ok is True and bytes(snap.sections[sf.KV]) == body
    assert snap.size == len(data)
    for offset in (10, 40 + 100, len(data) // 2, len(data) - 2):
        bad = write_file(tmp_path, flip(data, offset), name=f"bad-{offset}.snap")
        with pytest.raises(SnapshotCorrupt):
            sf.read_snapshot_file(bad)
