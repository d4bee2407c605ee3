"""Regenerate README.md's Performance section from a benchmark results.json.

    .venv/bin/python scripts/update_readme_performance.py bench/results/<run>/results.json

Replaces the text between the two performance markers of README.md with the
table `inmem bench markdown` prints (machine line and sizes included), and
copies the run's throughput plot to docs/throughput.png for the README.
"""

from __future__ import annotations

import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from inmem.bench.report import load, markdown  # noqa: E402

BEGIN = "<!-- performance:begin (scripts/update_readme_performance.py) -->"
END = "<!-- performance:end -->"


def main(argv) -> int:
    if len(argv) != 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    results = argv[0]
    doc = load(results)
    readme = os.path.join(ROOT, "README.md")
    text = open(readme, encoding="utf-8").read()
    if BEGIN not in text or END not in text:
        print("README.md has no performance markers", file=sys.stderr)
        return 1
    plot = os.path.join(os.path.dirname(results), "throughput.png")
    body = markdown(doc)
    if os.path.exists(plot):
        os.makedirs(os.path.join(ROOT, "docs"), exist_ok=True)
        shutil.copyfile(plot, os.path.join(ROOT, "docs", "throughput.png"))
        body += "\n![throughput, ours against the peers](docs/throughput.png)\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(readme, "w", encoding="utf-8") as f:
        f.write(head + BEGIN + "\n\n" + body + "\n" + END + tail)
    print(f"README.md performance section updated from {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
