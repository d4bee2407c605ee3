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


def test_missing_segment_exit_code_2(tmp_path, capsys):
    write_segment(tmp_path, 0, rec(b"a"))
    write_segment(tmp_path, 2, rec(b"c"))
    assert main([str(tmp_path)]) == 2
    # No corruption budget skips a missing segment: the report does not offer one.
    out = capsys.readouterr().out
    assert "whatever max_corrupt_entries allows" in out and "unless" not in out, out
    assert inspect_wal(tmp_path)["outcome"]["skippable"] is False


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


class _Refusal(Exception):
    def __init__(self, path, offset, reason):
        super().__init__(reason)
        self.path, self.offset, self.reason = path, offset, reason


class StubCheck:
    """A content check that refuses the record whose payload is b"bad", as RecordCheck would."""

    def __init__(self, start_lsn=0):
        self.start_lsn, self.start = start_lsn, "no snapshot"
        self.records = self.groups = 0
        self.error = self.error_lsn = None
        self.fed = []

    def feed(self, first, payloads, path, segment, offsets):
        for i, (payload, offset) in enumerate(zip(payloads, offsets)):
            self.fed.append((first + i, payload, segment, offset))
            if self.error is None and payload == b"bad":
                self.error, self.error_lsn = _Refusal(path, offset, "not a batch"), first + i
            elif self.error is None:
                self.records += 1


def test_every_record_is_fed_to_the_content_check_with_its_place(tmp_path):
    write_segment(tmp_path, 0, rec(b"a") + rec(b"b"))
    write_segment(tmp_path, 2, rec(b"c"))
    check = StubCheck()
    report = inspect_wal(tmp_path, check)
    assert check.fed == [(0, b"a", 0, 0), (1, b"b", 0, 11), (2, b"c", 2, 0)]
    assert report["content"] == {"records_checked": 3, "groups": 0, "from_lsn": 0,
                                 "start": "no snapshot", "outcome": {"kind": "ok"}}


def test_contents_the_check_refuses_are_exit_2_naming_the_record(tmp_path, capsys):
    write_segment(tmp_path, 0, rec(b"a") + rec(b"bad") + rec(b"c"))
    assert main([str(tmp_path)], content=StubCheck()) == 2
    text = capsys.readouterr().out
    assert ("content: BAD CONTENT in 00000000000000000000.wal at offset 11 (record LSN 1): "
            "not a batch") in text
    assert "outcome: clean" not in text and "outcome: NOT CLEAN" in text
    report = inspect_wal(tmp_path, StubCheck())
    assert report["content"]["outcome"] == {
        "kind": "content", "segment": "00000000000000000000.wal", "offset": 11, "lsn": 1,
        "reason": "not a batch", "error": "_Refusal"}
    assert report["content"]["records_checked"] == 1


def test_without_a_content_check_the_report_says_contents_were_not_checked(tmp_path, capsys):
    write_segment(tmp_path, 0, rec(b"a"))
    assert main([str(tmp_path)]) == 0
    assert "content: not checked" in capsys.readouterr().out
    assert inspect_wal(tmp_path)["content"]["outcome"]["kind"] == "not_checked"


def test_a_content_refusal_known_before_reading_is_exit_2(tmp_path):
    write_segment(tmp_path, 0, rec(b"a"))
    refused = {"outcome": {"kind": "snapshot_refused", "reason": "the snapshot does not load"}}
    assert main([str(tmp_path)], content=refused) == 2


def test_the_content_check_is_fed_in_blocks_not_the_whole_log(tmp_path):
    from inmem.wal.reader import BLOCK_RECORDS
    count = BLOCK_RECORDS * 2 + 5
    write_segment(tmp_path, 0, b"".join(rec(b"x%d" % i) for i in range(count)))
    sizes = []

    class Sizes(StubCheck):
        def feed(self, first, payloads, path, segment, offsets):
            sizes.append(len(payloads))
            super().feed(first, payloads, path, segment, offsets)

    report = inspect_wal(tmp_path, Sizes())
    assert sum(sizes) == count and len(sizes) >= 3 and max(sizes) <= BLOCK_RECORDS
    assert report["content"]["records_checked"] == count
