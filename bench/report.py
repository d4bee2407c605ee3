"""Results out: the printed table, results.json, and `compare OLD NEW`.

The table uses rich when it is installed and plain aligned text otherwise;
both show the same columns. `compare` applies the regression rule of the
performance baseline: a throughput more than 50% lower, or a latency (p50,
p99, or a time/memory row's value) more than 2x worse, is a regression, and
the exit code is non-zero when any row regressed.

Rows measured in interleaved rounds (they carry `ratio_spread`) show each
peer as "redis 23.7K: 0.74x [0.70-0.78]": the peer's median, ours / theirs,
and in brackets the lowest and highest per-round ratio (SPREAD_NOTE).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

from inmem.files import NotRegularFile, open_regular

from .context import fmt_count

SCHEMA_VERSION = 1
ROW_KEYS = ("name", "tier", "mode", "unit", "value", "p50", "p99", "n", "peers", "target",
            "ratio")
LATENCY_FACTOR = 2.0
THROUGHPUT_FLOOR = 0.5


# -- formatting --------------------------------------------------------------------

def fmt_value(value, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if unit == "ops/s":
        return f"{_si(value)} ops/s"
    if unit == "ms":
        return f"{value:,.1f} ms" if value >= 10 else f"{value:,.2f} ms"
    if unit == "B/key":
        return f"{value:,.0f} B/key"
    return f"{value:,.3g} {unit}"


def _si(x: float) -> str:
    # Three significant digits, trailing zeros kept: "1.00M" next to "999K".
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K"), (1.0, "")):
        if abs(x) >= div or div == 1.0:
            v = x / div
            digits = 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2
            return f"{v:.{digits}f}{suffix}"
    return str(x)


def _fmt_us(x) -> str:
    if x is None:
        return "-"
    if x >= 1000:
        return f"{x / 1000:,.2f} ms"
    return f"{x:,.2f}"


def _peer_short(value, unit: str) -> str:
    if isinstance(value, str):
        return value
    return fmt_value(value, unit).replace(" ops/s", "").replace(" B/key", " B")


def _clip(text: str, limit: int = 60) -> str:
    # The table stays readable; results.json keeps the whole reason.
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fmt_peers(row: dict) -> str:
    parts = []
    spreads = row.get("ratio_spread")
    for peer, theirs in row.get("peers", {}).items():
        text = f"{peer} {_clip(_peer_short(theirs, row['unit']), 48)}"
        ratio = row.get("ratio", {}).get(peer)
        if spreads is not None:
            text += _fmt_ratio_spread(ratio, spreads.get(peer))
        elif isinstance(ratio, (int, float)) and ratio > 0:
            better = ratio if row.get("better", "higher") == "higher" else 1.0 / ratio
            text += f" ({better:.2f}x better)" if better >= 1 else f" ({1 / better:.2f}x worse)"
        parts.append(text)
    return "; ".join(parts) if parts else "-"


def _fmt_ratio_spread(ratio, spread) -> str:
    """": 0.74x [0.70-0.78]": ours / theirs of the medians, then the per-round min-max."""
    if not isinstance(ratio, (int, float)) or ratio <= 0:
        return ""
    text = f": {ratio:.2f}x"
    if isinstance(spread, dict) and spread.get("rounds", 0) > 1:
        text += f" [{spread['min']:.2f}-{spread['max']:.2f}]"
    return text


def fmt_target(row: dict) -> str:
    t = row.get("target")
    if not t:
        return "-"
    met = row.get("target_met")
    text = t.get("text", "")
    if t.get("for_n") is not None:
        text += f" at n={fmt_count(t['for_n'])}"
    mark = {True: "ok", False: "MISS", None: "n/a"}[met]
    return f"{mark}: {text}"


def table_rows(results: list) -> list[list[str]]:
    out = []
    for row in results:
        status = row.get("status", "ok")
        value = fmt_value(row["value"], row["unit"]) if status == "ok" else _clip(status)
        n = row.get("n")
        out.append([row["name"], row.get("mode") or "-", value, _fmt_us(row.get("p50")),
                    _fmt_us(row.get("p99")), f"{n:,}" if isinstance(n, int) else "-",
                    fmt_target(row), fmt_peers(row)])
    return out


SPREAD_NOTE = ("x = ours / theirs of the medians over interleaved rounds; [a-b] = the lowest "
               "and highest ratio of one round (ours and the peer measured seconds apart)")
HEADERS = ["benchmark", "mode", "ours", "p50 µs", "p99 µs", "n", "target", "peers (ours vs them)"]


def print_table(doc: dict, file=None) -> None:
    file = file or sys.stdout
    results = doc.get("results", [])
    head = machine_line(doc)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        Console = None
    if Console is not None:
        width = None if file.isatty() else max(200, shutil.get_terminal_size((200, 40)).columns)
        console = Console(file=file, width=width, soft_wrap=False)
        console.print(head)
        for tier in _tiers_in_order(results):
            table = Table(title=f"tier: {tier}", title_justify="left", show_lines=False)
            for h in HEADERS:
                table.add_column(h, overflow="fold",
                                 justify="right" if h in ("ours", "p50 µs", "p99 µs", "n")
                                 else "left")
            for cells in table_rows([r for r in results if r["tier"] == tier]):
                table.add_row(*cells)
            console.print(table)
            if _has_spreads(results, tier):
                console.print(SPREAD_NOTE)
        return
    print(head, file=file)
    for tier in _tiers_in_order(results):
        print(f"\ntier: {tier}", file=file)
        print(plain_table(table_rows([r for r in results if r["tier"] == tier])), file=file)
        if _has_spreads(results, tier):
            print(SPREAD_NOTE, file=file)


def _has_spreads(results: list, tier=None) -> bool:
    return any("ratio_spread" in r for r in results if tier is None or r["tier"] == tier)


def plain_table(rows: list[list[str]], headers=HEADERS) -> str:
    widths = [len(h) for h in headers]
    for cells in rows:
        for i, c in enumerate(cells):
            widths[i] = max(widths[i], len(c))
    right = {2, 3, 4, 5}

    def line(cells):
        return "  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i])
                         for i, c in enumerate(cells)).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(c) for c in rows)])


def _tiers_in_order(results: list) -> list[str]:
    seen: list[str] = []
    for r in results:
        if r["tier"] not in seen:
            seen.append(r["tier"])
    return seen


def machine_line(doc: dict) -> str:
    m = doc.get("machine", {})
    disk = m.get("disk", {})
    mem = m.get("memory_bytes")
    mem_text = f"{mem / 2**30:.0f} GiB" if mem else "? GiB"
    commit = (doc.get("commit") or "unknown")[:10]
    sizes = doc.get("config", {}).get("sizes_text", "")
    return (f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {mem_text}, "
            f"{disk.get('fstype', '?')} ({disk.get('device', '?')}), {m.get('python', '?')}, "
            f"{m.get('os', '?')}; commit {commit}; started {doc.get('started', '?')}"
            + (f"\nsizes: {sizes}" if sizes else ""))


# -- results.json ------------------------------------------------------------------

def write_json(path: str, doc: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, sort_keys=False, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)


def _json_default(obj):
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


def load(path: str) -> dict:
    """A results.json, checked; a file that is not one ends the command with one line."""
    try:
        # A regular file only: /dev/zero or a FIFO would be read for ever.
        with open(open_regular(path), encoding="utf-8") as f:
            doc = json.load(f)
    except NotRegularFile as exc:
        raise SystemExit(f"cannot read {path}: it is {exc.kind}, not a results.json") from None
    except OSError as exc:
        raise SystemExit(f"cannot read {path}: {exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SystemExit(f"{path} is not JSON ({exc}); give a results.json written by the "
                         "benchmark") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise SystemExit(f"{path} has no \"results\" list; is it a benchmark results.json?")
    for i, row in enumerate(doc["results"]):
        # Rows are matched by (name, mode) and printed: both are text in every row written.
        if not (isinstance(row, dict) and type(row.get("name")) is str
                and isinstance(row.get("mode"), (str, type(None)))):
            raise SystemExit(f"{path}: row {i} of \"results\" is not a benchmark row (an object "
                             "whose name and mode are text)")
    return doc


# -- compare -----------------------------------------------------------------------

def compare(old: dict, new: dict) -> tuple[list[list[str]], int, list[str]]:
    """(table rows, number of regressions, notes) for NEW measured against OLD."""
    def key(r):
        return (r.get("name"), r.get("mode"))

    olds = {key(r): r for r in old["results"] if isinstance(r, dict)}
    rows, notes = [], []
    regressions = 0
    for r in new["results"]:
        if not isinstance(r, dict):
            continue
        o = olds.pop(key(r), None)
        if o is None:
            notes.append(f"new row, nothing to compare: {r.get('name')} [{r.get('mode')}]")
            continue
        if not _comparable(o) or not _comparable(r):
            notes.append(f"not compared (skipped or failed in one run): {r.get('name')} "
                         f"[{r.get('mode')}]")
            continue
        flags = _regressions(o, r)
        regressions += bool(flags)
        change = _change(o["value"], r["value"])
        rows.append([r["name"], r.get("mode") or "-", fmt_value(o["value"], o["unit"]),
                     fmt_value(r["value"], r["unit"]), change,
                     f"{_fmt_us(o.get('p50'))} -> {_fmt_us(r.get('p50'))}",
                     "REGRESSED: " + ", ".join(flags) if flags else "ok"])
    for k in olds:
        notes.append(f"missing from the new run: {k[0]} [{k[1]}]")
    return rows, regressions, notes


def _comparable(row: dict) -> bool:
    return row.get("status", "ok") == "ok" and isinstance(row.get("value"), (int, float))


def _change(old, new) -> str:
    if not old:
        return "-"
    return f"{(new - old) / old * 100:+.1f}%"


def _regressions(old: dict, new: dict) -> list[str]:
    flags = []
    better = new.get("better") or ("higher" if new.get("unit") == "ops/s" else "lower")
    if better == "higher":
        if new["value"] < THROUGHPUT_FLOOR * old["value"]:
            flags.append(f"throughput {new['value'] / old['value'] * 100:.0f}% of before")
    else:
        if old["value"] > 0 and new["value"] > LATENCY_FACTOR * old["value"]:
            flags.append(f"{new['unit']} {new['value'] / old['value']:.1f}x worse")
    for p in ("p50", "p99"):
        a, b = old.get(p), new.get(p)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a > 0 \
                and b > LATENCY_FACTOR * a:
            flags.append(f"{p} {b / a:.1f}x worse")
    return flags


def compare_main(argv) -> int:
    p = argparse.ArgumentParser(prog="inmem bench compare",
                                # A description is printed as written (only argument help
                                # is %-formatted), so a percent sign is written once.
                                description="flag regressions of NEW against OLD: throughput "
                                f"more than {1 - THROUGHPUT_FLOOR:.0%} lower or latency more "
                                f"than {LATENCY_FACTOR:g}x worse")
    p.add_argument("old", help="results.json of the earlier run")
    p.add_argument("new", help="results.json of the later run")
    args = p.parse_args(argv)
    old, new = load(args.old), load(args.new)
    rows, regressions, notes = compare(old, new)
    print(f"old: {machine_line(old).splitlines()[0]}")
    print(f"new: {machine_line(new).splitlines()[0]}")
    print(plain_table(rows, ["benchmark", "mode", "old", "new", "change", "p50 µs", "verdict"]))
    for note in notes:
        print(f"note: {note}")
    print(f"{regressions} regressed, {len(rows) - regressions} ok, {len(notes)} not compared")
    return 1 if regressions else 0


# -- markdown (for the README's Performance section) ----------------------------------

def markdown(doc: dict, tiers=None) -> str:
    """The results as a markdown table with the machine line, for pasting into docs."""
    lines = [f"Measured on: {machine_line(doc).splitlines()[0]}", ""]
    sizes = doc.get("config", {}).get("sizes_text")
    if sizes:
        lines += [f"Sizes: {sizes}", ""]
    lines.append("| " + " | ".join(HEADERS) + " |")
    lines.append("|" + "|".join("---:" if h in ("ours", "p50 µs", "p99 µs", "n") else "---"
                                for h in HEADERS) + "|")
    rows = [r for r in doc.get("results", []) if tiers is None or r["tier"] in tiers]
    for cells in table_rows(rows):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if _has_spreads(rows):
        lines += ["", SPREAD_NOTE + "."]
    return "\n".join(lines) + "\n"


def markdown_main(argv) -> int:
    p = argparse.ArgumentParser(prog="inmem bench markdown",
                                description="print a results.json as a markdown table")
    p.add_argument("results", help="a results.json written by the benchmark")
    p.add_argument("--tier", nargs="+", action="extend", help="only these tiers")
    args = p.parse_args(argv)
    sys.stdout.write(markdown(load(args.results), args.tier))
    return 0


__all__ = ["print_table", "markdown", "markdown_main", "write_json", "load", "compare",
           "compare_main", "fmt_value",
           "plain_table", "machine_line", "ROW_KEYS", "SCHEMA_VERSION"]
