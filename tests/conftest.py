"""Shared fixtures: the repo root, and running the CLIs as a user would.

The session shares one persistent XLA compilation cache (a fresh temporary directory, set
before jax is imported), inherited by every CLI the tests start: the same config is compiled
by many tests and subprocesses, and the suite must fit CI's 10 minutes on 2 cores. Only
compilation is cached; every step still runs. For the same reason the suite runs on two
pytest-xdist workers (pyproject's addopts; `-n 0` runs it in one process), and the 8-device
equality check (tests/multidevice_check.py, a subprocess of a minute or more of mostly
single-threaded compilation) starts as soon as collection finds a test that needs it, and
runs beside the tests before it. Every xdist worker collects every test; the first to get
there starts the one check of the session, whose report lands in a directory all workers
share, so the tests that read it may run on any worker.
"""

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The session's shared directory, made before jax is imported and before xdist starts its
# workers, which inherit it: the XLA cache and the 8-device check's report live there.
if "GENJAX_TEST_SESSION_DIR" not in os.environ:
    os.environ["GENJAX_TEST_SESSION_DIR"] = tempfile.mkdtemp(prefix="genjax-tests-")
    atexit.register(shutil.rmtree, os.environ["GENJAX_TEST_SESSION_DIR"], True)
SESSION_DIR = Path(os.environ["GENJAX_TEST_SESSION_DIR"])
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(SESSION_DIR / "xla-cache"))
# Cache every compile, not only those over jax's default 1 s: each CLI process compiles the
# same small programs (eager ops, the sampler) again.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

from genjax.backend import unroll_large_threefry_on_cpu  # noqa: E402  (after the cache setup)

# The in-process tests lower random draws as train.py and the other CLIs do: at the same speed,
# and to the same programs, so that the shared cache serves both. Importing genjax does not
# register this lowering; tests/test_backend.py checks that in a fresh process.
unroll_large_threefry_on_cpu()

MULTIDEVICE_DIR = SESSION_DIR / "multidevice"
MULTIDEVICE = pytest.StashKey[subprocess.Popen]()


def start_multidevice_check() -> subprocess.Popen:
    """tests/multidevice_check.py in its own process group; it leaves `stdout` (the JSON
    report) and `stderr` in MULTIDEVICE_DIR, then `rc`, its exit status, when it is done."""
    script = '"$1" "$2" > "$3/stdout" 2> "$3/stderr"; echo $? > "$3/rc.tmp"; mv "$3/rc.tmp" "$3/rc"'
    check = ROOT / "tests" / "multidevice_check.py"
    return subprocess.Popen(
        ["sh", "-c", script, "sh", sys.executable, check, MULTIDEVICE_DIR],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        start_new_session=True,
    )


@pytest.fixture(scope="session")
def multidevice_report() -> dict:
    """The check's report, once it is done (whichever worker started it)."""
    timeout = 600
    rc, deadline = MULTIDEVICE_DIR / "rc", time.monotonic() + timeout
    while not rc.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"tests/multidevice_check.py gave no report in {timeout:.0f} s")
        time.sleep(0.5)
    stderr = (MULTIDEVICE_DIR / "stderr").read_text()
    assert rc.read_text().strip() == "0", stderr[-3000:]
    return json.loads((MULTIDEVICE_DIR / "stdout").read_text())


# The xdist groups of the longest module fixtures (a minute or more of work each on CI's 2
# cores), started first so that the short tests fill in beside them rather than behind.
LONG_GROUPS = ("multihost", "one_device_run", "text")


def pytest_collection_modifyitems(session, config, items):
    """The tests of LONG_GROUPS first, every other test in collection order."""

    def group(item):
        marker = item.get_closest_marker("xdist_group")
        return (marker.args or [marker.kwargs.get("name")])[0] if marker else None

    items.sort(key=lambda item: group(item) not in LONG_GROUPS)


def pytest_collection_finish(session):
    if any("multidevice_report" in getattr(item, "fixturenames", ()) for item in session.items):
        try:
            MULTIDEVICE_DIR.mkdir()  # atomic: the first worker here starts the check
        except FileExistsError:
            return
        session.config.stash[MULTIDEVICE] = start_multidevice_check()


def pytest_sessionfinish(session, exitstatus):
    """The worker that started the check waits for it, as another worker may still need it,
    or stops it if the run was cut short (-x, Ctrl-C)."""
    proc = session.config.stash.get(MULTIDEVICE, None)
    if proc is None or proc.poll() is not None:
        return
    if session.shouldfail or session.shouldstop or exitstatus == pytest.ExitCode.INTERRUPTED:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.wait()


def run_cli(*args, env=None, timeout=300, **kwargs):
    """Runs `python SCRIPT ARGS...` from the repo root; returns the CompletedProcess."""
    full_env = dict(os.environ, JAX_PLATFORMS="cpu", **(env or {}))
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        **kwargs,
    )


@pytest.fixture
def cli():
    return run_cli
