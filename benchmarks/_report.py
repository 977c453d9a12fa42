"""Write one benchmark's section into docs/benchmarks.md, leaving the others in place."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

REPORT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\n"
    "Each section is written by the script it names, measured side by side in one run on one machine.\n"
    "Ratios are against the named baseline in the same run; absolute numbers depend on the machine.\n"
)


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_section(name: str, title: str, body: str) -> Path:
    """Replace (or append) the section delimited by ``<!-- bench:name -->`` markers."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"{start}\n## {title}\n\n_Written by `benchmarks/{name}.py` on {stamp}; machine: {machine()}._\n\n"
        f"{body.strip()}\n{end}"
    )
    text = REPORT.read_text() if REPORT.exists() else HEADER
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(text)
    return REPORT
