"""Run a snippet in a new interpreter: for checks on what a process imports (sys.modules)."""

import subprocess
import sys


def run_fresh(code: str) -> None:
    """Run `code` with this interpreter in a fresh process; it must print exactly 'ok'."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
