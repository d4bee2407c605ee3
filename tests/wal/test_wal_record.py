"""The record encoder against the documented on-disk record layout."""

from __future__ import annotations

import struct

import pytest
from crc32c import crc32c

from inmem.wal import record
from inmem.wal.errors import RecordTooLarge
from inmem.wal.segment import (list_segments, parse_segment_name, remove_temp_files,
                         segment_name)
from walfix import rec, write_segment


def test_encode_matches_the_layout_byte_by_byte():
    payload = b"\x81\xa3key\xa5value"
    got = record.encode(payload)
    expected = (len(payload).to_bytes(4, "little") + bytes([1, 2]) + payload
                + crc32c(bytes([1, 2]) + payload).to_bytes(4, "little"))
    assert got == expected
    assert got == rec(payload)
    assert len(got) == record.record_size(len(payload)) == len(payload) + 10


def test_encode_into_appends_and_counts_bytes():
    buf = bytearray(b"prefix")
    n = record.encode_into(buf, b"abc", record.TYPE_BATCH)
    assert n == 13
    assert bytes(buf) == b"prefix" + rec(b"abc")


@pytest.mark.parametrize("payload", [b"", bytearray(b"xyz"), memoryview(b"hello world")])
def test_bytes_like_payloads(payload):
    assert record.encode(payload) == rec(bytes(payload))


def test_other_record_types_are_encoded_with_their_code():
    assert record.encode(b"x", 7) == rec(b"x", rtype=7)


def test_constants_are_fixed():
    # These are on-disk values: changing one breaks every existing log.
    assert record.TYPE_BATCH == 1
    assert record.FORMAT_VERSION == 2
    assert record.READ_VERSIONS == (1, 2)
    assert record.RECORD_BYTES_MAX == 64 * 2**20
    assert record.HEADER.size == 6 and record.CRC.size == 4


@pytest.mark.parametrize("rtype", [0, 256, -1, "1", 1.0, None])
def test_bad_type_codes_are_rejected_without_touching_the_buffer(rtype):
    buf = bytearray(b"keep")
    with pytest.raises(ValueError):
        record.encode_into(buf, b"x", rtype)
    assert buf == b"keep"


@pytest.mark.parametrize("payload", ["text", 12, None, [1, 2]])
def test_non_bytes_payloads_are_rejected_without_touching_the_buffer(payload):
    buf = bytearray(b"keep")
    with pytest.raises(TypeError):
        record.encode_into(buf, payload)
    assert buf == b"keep"


def test_oversized_payload_is_rejected(monkeypatch):
    monkeypatch.setattr(record, "RECORD_BYTES_MAX", 16)
    buf = bytearray()
    record.encode_into(buf, b"x" * 16)
    with pytest.raises(RecordTooLarge) as info:
        record.encode_into(buf, b"x" * 17)
    assert isinstance(info.value, ValueError)
    assert "17" in str(info.value)
    assert len(buf) == 26


def test_segment_names_sort_in_log_order(tmp_path):
    assert segment_name(1234) == "00000000000000001234.wal"
    assert parse_segment_name("00000000000000001234.wal") == 1234
    for bad in ["1234.wal", "0000000000000000123a.wal", "00000000000000001234.wal.broken",
                "00000000000000001234.tmp", "0000000000000000000².wal"]:
        assert parse_segment_name(bad) is None
    for lsn in [10, 9, 100, 0, 2**40]:
        write_segment(tmp_path, lsn, b"")
    (tmp_path / "00000000000000000009.wal.broken").write_bytes(b"evidence")
    (tmp_path / "00000000000000000011.wal.tmp").write_bytes(b"half made")
    (tmp_path / "notes.txt").write_bytes(b"")
    found = list_segments(tmp_path)
    assert [lsn for lsn, _ in found] == [0, 9, 10, 100, 2**40]
    assert found[1][1] == str(tmp_path / "00000000000000000009.wal")
    assert list_segments(tmp_path / "missing") == []
    assert remove_temp_files(tmp_path) == [str(tmp_path / "00000000000000000011.wal.tmp")]
    assert not (tmp_path / "00000000000000000011.wal.tmp").exists()
    assert (tmp_path / "00000000000000000009.wal.broken").exists()


def test_segment_name_rejects_out_of_range():
    with pytest.raises(ValueError):
        segment_name(-1)
    with pytest.raises(ValueError):
        segment_name(10**20)


def test_header_struct_is_little_endian():
    assert record.HEADER.pack(0x01020304, 5, 6) == struct.pack("<IBB", 0x01020304, 5, 6)
    assert record.HEADER.pack(1, 1, 1)[:4] == b"\x01\x00\x00\x00"
