"""`inmem wal inspect`: the report and its exit codes."""

from __future__ import annotations

import json

from inmem.wal.inspect import inspect_wal, main
from walfix import rec, write_segment


def test_clean_log_report(tmp_path, capsys):
    write_segment(tmp_path, 10, rec(b"a" * 10) + rec(b"b" * 30, rtype=5))
    write_segment(tmp_path, 12, rec(b"c" * 20) + bytes(16))
    (tmp_path / "00000000000000000007.wal.broken").write_bytes(b"old evidence")
    report = inspect_wal(tmp_path)
    assert report["records"] == 3
    assert report["records_by_type"] == {"batch": 2, "type 5": 1}
    assert report["payload_bytes"] == {"min": 10, "max": 30, "total": 60, "avg": 20.0}
    assert (report["first_lsn"], report["last_lsn"], report["next_lsn"]) == (10, 12, 13)
    assert [(s["name"], s["size_bytes"], s["records"], s["lsn_first"], s["lsn_last"])
            for s in report["segments"]] == [
        ("00000000000000000010.wal", 60, 2, 10, 11),
        ("00000000000000000012.wal", 46, 1, 12, 12)]
    assert report["other_files"] == ["00000000000000000007.wal.broken"]
    assert report["outcome"] == {"kind": "clean"}
    assert main([str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "outcome: clean" in text and "LSN 10..11" in text and "batch: 2" in text


def test_torn_tail_exit_code_1(tmp_path, capsys):
    write_segment(tmp_path, 0, rec(b"a") + rec(b"torn")[:5])
    assert main([str(tmp_path)]) == 1
    text = capsys.readouterr().out
    assert "TORN TAIL in 00000000000000000000.wal at offset 11" in text
    report = inspect_wal(tmp_path)
    assert report["outcome"] == {"kind": "torn_tail", "segment": "00000000000000000000.wal",
                                 "offset": 11, "bytes_left": 5}


def test_corruption_exit_code_2(tmp_path, capsys):
    write_segment(tmp_path, 0, rec(b"a") + rec(b"bad", crc=7) + rec(b"c"))
    assert main([str(tmp_path), "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["outcome"]["kind"] == "corruption"
    assert report["outcome"]["segment"] == "00000000000000000000.wal"
    assert report["outcome"]["offset"] == 11
    assert "crc32c mismatch" in report["outcome"]["reason"]
    assert report["records"] == 1


def test_missing_segment_exit_code_2(tmp_path):
    write_segment(tmp_path, 0, rec(b"a"))
    write_segment(tmp_path, 2, rec(b"c"))
    assert main([str(tmp_path)]) == 2


def test_missing_directory_exit_code_2(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().out
    assert inspect_wal(tmp_path / "nope")["outcome"]["kind"] == "missing"


def test_a_directory_without_segments_has_nothing_to_inspect(tmp_path, capsys):
    (tmp_path / "00000000000000000007.wal.broken").write_bytes(b"old evidence")
    assert main([str(tmp_path)]) == 2
    out = capsys.readouterr()
    assert "clean" not in out.out
    assert "no WAL segments" in out.err and "nothing to inspect" in out.err
    report = inspect_wal(tmp_path)
    assert report["outcome"]["kind"] == "empty"
    assert report["segments"] == [] and report["other_files"] == ["00000000000000000007.wal.broken"]
