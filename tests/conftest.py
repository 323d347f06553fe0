"""Shared fixtures: the repo root, and running the CLIs as a user would.

The session shares one persistent XLA compilation cache (a fresh temporary directory, set
before jax is imported), inherited by every CLI the tests start: the same config is compiled
by many tests and subprocesses, and the suite must fit CI's 10 minutes on 2 cores. Only
compilation is cached; every step still runs. For the same reason the suite runs on two
pytest-xdist workers (pyproject's addopts; `-n 0` runs it in one process), and the 8-device
equality check (tests/multidevice_check.py, a subprocess of about a minute of mostly
single-threaded compilation) starts as soon as collection finds a test that needs it, and
runs beside the tests before it. Every xdist worker collects every test, so each starts its
own check, and the tests that read it may run on either worker. Starting it only when a
worker first needs it (the tests in one xdist_group) saves that CPU, but then the check runs
alone at the end of that worker's queue instead of beside other tests; in one trial of that
variant the whole suite took longer.
"""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="genjax-tests-xla-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)
# Cache every compile, not only those over jax's default 1 s: each CLI process compiles the
# same small programs (eager ops, the sampler) again.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


MULTIDEVICE = pytest.StashKey[subprocess.Popen]()


def start_multidevice_check() -> subprocess.Popen:
    """tests/multidevice_check.py in a subprocess; its stdout is the JSON report."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "multidevice_check.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )


def pytest_collection_finish(session):
    if any("multidevice_report" in getattr(item, "fixturenames", ()) for item in session.items):
        session.config.stash[MULTIDEVICE] = start_multidevice_check()


def pytest_sessionfinish(session):
    """Stops the check if no test waited for it (a failure before it under -x, say)."""
    proc = session.config.stash.get(MULTIDEVICE, None)
    if proc is not None and proc.poll() is None:
        proc.kill()


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
