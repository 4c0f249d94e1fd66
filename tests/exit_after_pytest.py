"""End the test process with pytest's own exit status, skipping the interpreter's native teardown.

Why: after ``ray.shutdown()`` Ray leaves native threads running in the driver process: its GCS
client I/O thread, gRPC executors and timers, and one more unnamed thread per init/shutdown
cycle. This process starts and stops Ray several times. When the interpreter finalises, C++
static destructors can free what those threads still read. One CI run died with SIGSEGV *after*
pytest had printed "149 passed", so make failed a run whose tests had all passed; in about a
dozen other full runs it did not happen. The crashing thread was not recorded, so Ray is the
likeliest cause, not a proven one: here, a Python process of Ray's local cluster crashed at
shutdown in ``std::_Hash_bytes`` on unmapped memory, the signature of such a race.

What is kept: pytest finishes completely (summary, unconfigure, its cleanups); then every atexit
handler runs (Ray's own shutdown, pytest's temp-dir lock removal), stdio is flushed, and the
process exits with pytest's status. A failing run still exits 1. A crash during a test still
crashes the run.
"""

from __future__ import annotations

import atexit
import os
import sys

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_cmdline_main(config: pytest.Config):
    status = yield
    atexit._run_exitfuncs()  # the handlers os._exit would otherwise skip
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(int(status))
