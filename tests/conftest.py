"""Shared fixtures: the repo root, and running the CLIs as a user would."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
