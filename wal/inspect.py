"""`inmem wal inspect DIR`: what a WAL directory holds and how it ends, for an operator.

`inspect_wal(dir)` reads the whole log (read only, never repairs) and returns
a plain dict: segments with sizes and LSN ranges, records per type, payload
size statistics, the LSN range and the reader's outcome. `main(argv)` prints
it (or JSON with --json) and exits 0 for a clean log, 1 for a torn tail (normal
after a crash: recovery will truncate it) and 2 for corruption (recovery will
refuse to continue past it), a missing directory, or a directory without WAL
segments: nothing there is a log, so nothing can be said about how one ends.

The format (headers, lengths, crc32c) is all this layer knows. A record
whose crc32c holds can still hold contents opening refuses; what a record's
contents mean is the engine's, above this layer, so the caller hands in a
content check (`recovery.content_check.RecordCheck`, which `inmem wal inspect`
builds on a scratch engine) and every record read is fed to it in the same
pass, block by block. Contents it refuses are exit 2 as well, naming the
segment, the offset, the record's LSN and the reason. Without one, the report
says the contents were not checked.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from inmem.wal.reader import Corruption, TornTail, WalReader
from inmem.wal.record import TYPE_NAMES
from inmem.wal.segment import list_segments, other_files

EXIT_CLEAN = 0
EXIT_TORN_TAIL = 1
EXIT_CORRUPTION = 2


def _type_name(rtype: int) -> str:
    return TYPE_NAMES.get(rtype, f"type {rtype}")


#: the content outcomes after which opening refuses the store
CONTENT_REFUSED = ("content", "snapshot_refused", "gap")
NOT_CHECKED = {"outcome": {"kind": "not_checked",
                           "reason": "no content check was given (`inmem wal inspect` runs one)"}}


def inspect_wal(directory, content=None) -> dict:
    """Summarize the WAL in `directory`; see the module docstring for the fields.

    `content`: None (contents not checked), a dict that is the content report
    already (the caller found why they cannot be checked), or a check with
    `feed(first_lsn, payloads, segment_path, segment_first_lsn, offsets)` and
    the attributes of `recovery.content_check.RecordCheck`, fed every record read.
    """
    directory = os.fspath(directory)
    report: dict = {"directory": directory, "exists": os.path.isdir(directory)}
    if not report["exists"]:
        report["outcome"] = {"kind": "missing",
                             "reason": "no such directory"}
        return report
    segments = []
    by_path = {}
    for first, path in list_segments(directory):
        entry = {"name": os.path.basename(path), "first_lsn": first,
                 "size_bytes": os.path.getsize(path), "records": 0,
                 "lsn_first": None, "lsn_last": None}
        segments.append(entry)
        by_path[path] = entry

    reader = WalReader(directory)
    by_type: dict[str, int] = {}
    count = 0
    size_min = size_max = None
    size_total = 0
    first_lsn = last_lsn = None
    current = None
    feed = getattr(content, "feed", None)
    for first, rtypes, payloads, segment, offsets in reader.placed_blocks():
        path = reader.segment
        if path != current:
            current = path
            entry = by_path[path]
            entry["lsn_first"] = first
        for lsn, rtype, payload in zip(range(first, first + len(payloads)), rtypes, payloads):
            entry["lsn_last"] = lsn
            entry["records"] += 1
            name = _type_name(rtype)
            by_type[name] = by_type.get(name, 0) + 1
            size = len(payload)
            size_total += size
            if size_min is None or size < size_min:
                size_min = size
            if size_max is None or size > size_max:
                size_max = size
            if first_lsn is None:
                first_lsn = lsn
            last_lsn = lsn
            count += 1
        if feed is not None:
            feed(first, payloads, path, segment, offsets)

    outcome = reader.outcome
    if isinstance(outcome, TornTail):
        out = {"kind": "torn_tail", "segment": os.path.basename(outcome.segment),
               "offset": outcome.offset, "bytes_left": outcome.bytes_left}
    elif isinstance(outcome, Corruption):
        out = {"kind": "corruption", "segment": os.path.basename(outcome.segment),
               "offset": outcome.offset, "reason": outcome.reason,
               "skippable": outcome.skippable}
    elif not segments:
        out = {"kind": "empty", "reason": "no WAL segments"}
    else:
        out = {"kind": "clean"}
    report.update({
        "segments": segments,
        "records": count,
        "records_by_type": dict(sorted(by_type.items())),
        "payload_bytes": {"min": size_min, "max": size_max, "total": size_total,
                          "avg": (size_total / count) if count else None},
        "first_lsn": first_lsn,
        "last_lsn": last_lsn,
        "next_lsn": reader.next_lsn,
        "other_files": other_files(directory),
        "outcome": out,
        "content": _content_report(content, bool(segments)),
    })
    return report


def _content_report(content, any_segment: bool) -> dict:
    if content is None:
        return {"outcome": dict(NOT_CHECKED["outcome"])}
    if isinstance(content, dict):
        return content
    report = {"records_checked": content.records, "groups": content.groups,
              "from_lsn": content.start_lsn, "start": content.start}
    error = content.error
    if error is not None:
        report["outcome"] = {
            "kind": "content", "segment": os.path.basename(error.path),
            "offset": error.offset, "lsn": content.error_lsn,
            "reason": getattr(error, "reason", str(error)), "error": type(error).__name__}
    elif not any_segment:
        report["outcome"] = {"kind": "not_checked", "reason": "no WAL segments"}
    else:
        report["outcome"] = {"kind": "ok"}
    return report


#: exit code -> the report's "verdict": what a script reading --json needs in one field
VERDICTS = {EXIT_CLEAN: "clean", EXIT_TORN_TAIL: "torn_tail", EXIT_CORRUPTION: "refused"}


def exit_code(report: dict) -> int:
    kind = report["outcome"]["kind"]
    if report.get("content", NOT_CHECKED)["outcome"]["kind"] in CONTENT_REFUSED:
        return EXIT_CORRUPTION  # opening refuses the store, whatever the format says
    if kind == "clean":
        return EXIT_CLEAN
    if kind == "torn_tail":
        return EXIT_TORN_TAIL
    return EXIT_CORRUPTION


def format_report(report: dict) -> str:
    """The report as lines of text for a terminal."""
    lines = [f"WAL directory: {report['directory']}"]
    out = report["outcome"]
    if out["kind"] == "missing":
        lines.append("outcome: MISSING: the directory does not exist")
        return "\n".join(lines)
    if out["kind"] == "empty":
        lines.append(empty_message(report))
        return "\n".join(lines)
    segments = report["segments"]
    lines.append(f"segments: {len(segments)}")
    for seg in segments:
        if seg["records"]:
            span = f"LSN {seg['lsn_first']}..{seg['lsn_last']}"
        else:
            span = "no records read"
        lines.append(f"  {seg['name']}  {seg['size_bytes']:>12} bytes  "
                     f"{seg['records']:>9} records  {span}")
    by_type = ", ".join(f"{k}: {v}" for k, v in report["records_by_type"].items())
    lines.append(f"records: {report['records']}" + (f" ({by_type})" if by_type else ""))
    sizes = report["payload_bytes"]
    if report["records"]:
        lines.append(f"payload bytes: min {sizes['min']}, avg {sizes['avg']:.1f}, "
                     f"max {sizes['max']}, total {sizes['total']}")
        lines.append(f"LSN range: {report['first_lsn']}..{report['last_lsn']}")
    lines.append(f"next LSN: {report['next_lsn']}")
    if report["other_files"]:
        lines.append("other files: " + ", ".join(report["other_files"]))
    content = report.get("content", NOT_CHECKED)
    refused = content["outcome"]["kind"] in CONTENT_REFUSED
    lines.append(content_line(content))
    if out["kind"] == "clean" and refused:
        lines.append("outcome: NOT CLEAN: every record's format and crc32c hold, but opening "
                     "refuses the contents (see content above)")
    elif out["kind"] == "clean":
        lines.append("outcome: clean")
    elif out["kind"] == "torn_tail":
        lines.append(f"outcome: TORN TAIL in {out['segment']} at offset {out['offset']} "
                     f"({out['bytes_left']} bytes left); recovery truncates it after "
                     f"keeping a numbered .broken.N copy")
    else:
        if out.get("skippable", True):
            stops = "recovery stops here unless max_corrupt_entries allows skipping"
        else:
            stops = ("recovery stops here whatever max_corrupt_entries allows (it skips "
                     "damaged records inside a segment only)")
        lines.append(f"outcome: CORRUPTION in {out['segment']} at offset {out['offset']}: "
                     f"{out['reason']}; {stops}, keep a copy of the directory for diagnosis")
    return "\n".join(lines)


def content_line(content: dict) -> str:
    """What the content check found, as one line."""
    out = content["outcome"]
    kind = out["kind"]
    if kind == "ok":
        return (f"content: ok, {content['records_checked']} records checked from LSN "
                f"{content['from_lsn']} ({content['start']})")
    if kind == "content":
        return (f"content: BAD CONTENT in {out['segment']} at offset {out['offset']} (record "
                f"LSN {out['lsn']}): {out['reason']}; the crc32c holds, but opening refuses "
                f"this record ({out['error']}) and stops, so keep a copy of the directory and "
                f"open it with the release that wrote it ({content['records_checked']} records "
                f"from LSN {content['from_lsn']} checked before it, {content['start']})")
    if kind in CONTENT_REFUSED:
        return f"content: NOT CHECKED: {out['reason']}"
    return f"content: not checked: {out['reason']}"


def empty_message(report: dict) -> str:
    """What to say about a directory holding no WAL segment."""
    others = report.get("other_files") or []
    held = ""
    if others:
        held = f" (it holds {', '.join(others[:3])}{', ...' if len(others) > 3 else ''})"
    return (f"no WAL segments (files like 00000000000000000000.wal) in "
            f"{report['directory']}{held}: nothing to inspect; pass a shard's or a store's "
            "wal/ directory, or the directory that holds it")


def main(argv=None, content=None) -> int:
    """Print the report for one WAL directory; exit 0 clean, 1 torn tail, 2 corruption/missing/
    no segments/contents opening refuses. `content`: as for `inspect_wal`."""
    parser = argparse.ArgumentParser(
        prog="inmem wal inspect",
        description="Summarize a WAL directory and say how it ends (read only).")
    parser.add_argument("directory", help="the wal/ directory of a shard")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        report = inspect_wal(args.directory, content)
    except OSError as exc:
        # E.g. a segment removed by a live writer between listing and reading.
        print(f"cannot read the WAL in {args.directory}: {exc}; run the command again, "
              f"or on a copy of the directory", file=sys.stderr)
        return EXIT_CORRUPTION
    if args.json:
        # "outcome" is the format's verdict and "content.outcome" the contents';
        # "verdict" says what the exit code says: clean, torn_tail (opening cuts
        # it off) or refused (opening refuses the store, or there is no WAL).
        print(json.dumps({**report, "verdict": VERDICTS[exit_code(report)]}, indent=2,
                         sort_keys=True))
    elif report["outcome"]["kind"] != "empty":
        print(format_report(report))
    if report["outcome"]["kind"] == "empty":
        # Not a report of a log that happens to be short: no log is there at all.
        print(f"{parser.prog}: {empty_message(report)}", file=sys.stderr)
    return exit_code(report)


if __name__ == "__main__":
    sys.exit(main())
