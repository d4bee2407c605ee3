"""PNG plots of a results.json: throughput, latency, recovery time and memory, ours beside peers.

matplotlib is installed with pip when missing (unless installing was turned
off); without it the plots are skipped with a message and nothing else
changes. `python -m inmem.bench.plots results.json [DIR]` redraws them from a file.
"""

from __future__ import annotations

import os
import sys

from .peers import PeerUnavailable, ensure_module

OURS_COLOR = "#1f77b4"
PEER_COLORS = ["#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def draw(doc: dict, out_dir: str, *, install: bool = True) -> list[str]:
    """Draw every plot the results support into out_dir; returns what it did, as lines."""
    try:
        matplotlib = ensure_module("matplotlib", "matplotlib", install=install)
    except PeerUnavailable as exc:
        return [f"plots skipped: {exc}"]
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in doc.get("results", []) if r.get("status") == "ok"
          and isinstance(r.get("value"), (int, float))]
    made = []
    specs = [
        ("throughput.png", "Throughput, ours beside peers (ops/s, log scale)",
         [r for r in ok if r["unit"] == "ops/s" and _numeric_peers(r)], "ops/s", True),
        ("recovery.png", "Recovery and snapshots (ms, lower is better)",
         [r for r in ok if r["tier"] == "recovery"], "ms", False),
        ("memory.png", "Memory per key (bytes, lower is better)",
         [r for r in ok if r["unit"] == "B/key"], "bytes per key", False),
    ]
    for filename, title, rows, xlabel, log in specs:
        if not rows:
            continue
        path = os.path.join(out_dir, filename)
        _grouped_bars(plt, rows, title, xlabel, log, path, doc)
        made.append(f"plot: {path}")
    lat_rows = [r for r in ok if r["tier"] in ("micro", "durability")
                and isinstance(r.get("p50"), (int, float))]
    if lat_rows:
        path = os.path.join(out_dir, "latency.png")
        _latency(plt, lat_rows, path, doc)
        made.append(f"plot: {path}")
    return made or ["plots: no rows to plot"]


def _numeric_peers(row: dict) -> list[str]:
    return [p for p, v in row.get("peers", {}).items() if isinstance(v, (int, float))]


def _label(row: dict) -> str:
    mode = row.get("mode")
    return f"{row['name']} [{mode}]" if mode else row["name"]


def _subtitle(doc: dict) -> str:
    m = doc.get("machine", {})
    commit = (doc.get("commit") or "unknown")[:10]
    return (f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('python', '?')}, "
            f"commit {commit}")


def _grouped_bars(plt, rows, title, xlabel, log, path, doc):
    peers: list[str] = []
    for r in rows:
        for p in _numeric_peers(r):
            if p not in peers:
                peers.append(p)
    series = ["ours", *peers]
    height = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(11, 0.5 + 0.45 * len(rows) * max(1, len(series) * 0.6)))
    for k, who in enumerate(series):
        ys, xs = [], []
        for i, r in enumerate(rows):
            v = r["value"] if who == "ours" else r["peers"].get(who)
            if isinstance(v, (int, float)) and v > 0:
                ys.append(i + k * height)
                xs.append(v)
        color = OURS_COLOR if who == "ours" else PEER_COLORS[(k - 1) % len(PEER_COLORS)]
        ax.barh(ys, xs, height=height, label=who, color=color)
    ax.set_yticks([i + height * (len(series) - 1) / 2 for i in range(len(rows))])
    ax.set_yticklabels([_label(r) for r in rows], fontsize=8)
    ax.invert_yaxis()
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_title(f"{title}\n{_subtitle(doc)}", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _latency(plt, rows, path, doc):
    fig, ax = plt.subplots(figsize=(11, 0.6 + 0.32 * len(rows)))
    ys = range(len(rows))
    ax.barh([y - 0.2 for y in ys], [r["p50"] for r in rows], height=0.4, label="p50",
            color=OURS_COLOR)
    ax.barh([y + 0.2 for y in ys], [r["p99"] or 0 for r in rows], height=0.4, label="p99",
            color="#aec7e8")
    ax.set_yticks(list(ys))
    ax.set_yticklabels([_label(r) for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("latency per operation (µs, log scale)")
    ax.set_title(f"Embedded latency, ours\n{_subtitle(doc)}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    from .report import load
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or len(argv) > 2:
        print("usage: python -m inmem.bench.plots results.json [OUT_DIR]", file=sys.stderr)
        return 2
    doc = load(argv[0])
    out = argv[1] if len(argv) == 2 else os.path.dirname(os.path.abspath(argv[0]))
    for line in draw(doc, out):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
