"""The test process's exit status is pytest's, even when native teardown would crash after it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# A module-level object whose finaliser reads address 0: it runs during interpreter teardown,
# after pytest has printed its summary, like the native teardown that crashed CI after a green run.
CRASH_AT_TEARDOWN = """
import atexit, ctypes, pathlib

class CrashAtTeardown:
    def __del__(self, _read=ctypes.string_at):
        _read(0)

KEEP = CrashAtTeardown()
atexit.register(pathlib.Path({marker!r}).write_text, "ran")

def test_it():
    assert {outcome}
"""


def _pytest(tmp_path: Path, outcome: bool, plugin: bool) -> tuple[subprocess.CompletedProcess, Path]:
    marker = tmp_path / f"atexit-{outcome}-{plugin}"
    test = tmp_path / f"test_teardown_{outcome}_{plugin}.py"
    test.write_text(CRASH_AT_TEARDOWN.format(marker=str(marker), outcome=outcome))
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)]
    if plugin:
        args[3:3] = ["-p", "exit_after_pytest"]
    # No empty entry when PYTHONPATH is unset: "" would put the cwd on sys.path as well.
    path = [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return proc, marker


def test_a_crash_in_native_teardown_no_longer_fails_a_passing_run(tmp_path: Path):
    bare, _ = _pytest(tmp_path, outcome=True, plugin=False)
    assert "1 passed" in bare.stdout and bare.returncode == -signal.SIGSEGV  # the crash is real

    proc, marker = _pytest(tmp_path, outcome=True, plugin=True)
    assert "1 passed" in proc.stdout and proc.returncode == 0, proc.stdout + proc.stderr
    assert marker.read_text() == "ran"  # atexit handlers (Ray's shutdown, pytest's lock removal) still run


def test_a_failing_run_still_exits_1(tmp_path: Path):
    proc, marker = _pytest(tmp_path, outcome=False, plugin=True)
    assert "1 failed" in proc.stdout and proc.returncode == 1, proc.stdout + proc.stderr
    assert marker.read_text() == "ran"
