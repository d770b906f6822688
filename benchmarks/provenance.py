"""Where a benchmark's numbers came from (the commit they were measured at), and how every
benchmark hands them out."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def git_commit() -> str | None:
    """HEAD of the repository holding the benchmarks (None outside a git checkout)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def publish(report: dict, output: Path | None = None) -> None:
    """Print a benchmark's report as one JSON object (stdout holds nothing else) with the commit
    it was measured at, and also write it to `output` when given."""
    report.setdefault("git_commit", git_commit())
    text = json.dumps(report, indent=2)
    print(text)
    if output is not None:
        Path(output).write_text(text + "\n")
