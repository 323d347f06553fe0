"""What the command-line programs share: flag parsing and user errors as one line, exit 2."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from absl import flags

from genjax.config import ConfigError

USAGE_ERROR = 2  # bad input: flags, config, paths, data
IO_ERROR = 4  # the file system failed during the run (disk full, read-only)


def fail(message: str, code: int = USAGE_ERROR, run_exit_handlers: bool = True):
    """Prints `error: message` as one line on stderr and exits with `code`."""
    print("error: " + " ".join(str(message).split()), file=sys.stderr, flush=True)
    if not run_exit_handlers:
        sys.stdout.flush()
        os._exit(code)
    sys.exit(code)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, but a bad flag is one line and exit 2 (not usage + exit 1)."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(e)
    except Exception as e:  # noqa: BLE001 - parsing loads --config files: any error in one
        # (and ml_collections' ValueError, KeyError, ... for a bad --config.KEY override).
        fail(f"{type(e).__name__}: {e}")


def config_from_flags(name: str = "config"):
    """The ConfigDict of a config_flags flag; a missing or failing config file exits 2."""
    path = flags.FLAGS[name].config_filename if name in flags.FLAGS else None
    if path and not Path(path.split(":")[0]).is_file():
        known = sorted(p.name for p in Path("configs").glob("*.py") if not p.stem.startswith("_"))
        fail(f"--{name} {path}: no such file; configs/ holds {', '.join(known) or 'nothing'}")
    try:
        return getattr(flags.FLAGS, name)
    except Exception as e:  # noqa: BLE001 - any failure to load a user's config file
        fail(f"--{name} {path}: cannot load it ({type(e).__name__}: {e})")


def run_or_exit(fn: Callable[[], object]) -> None:
    """Runs `fn`; a ConfigError becomes one line on stderr and exit code 2."""
    for name in ("orbax", "absl", "jax._src.xla_bridge"):  # orbax speaks through absl logging
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        fn()
    except ConfigError as e:
        fail(e)
    except OSError as e:  # a disk that fills up or goes away during the run
        # Without the interpreter's shutdown: tensorboardX's writer thread and exit hook would
        # write to the same file system, fail again and print tracebacks after the error line
        # (the checkpoints on disk are safe from an abrupt exit: see the SIGKILL tests).
        fail(f"I/O error: {e}", IO_ERROR, run_exit_handlers=False)
    except KeyboardInterrupt:
        fail("interrupted", 130)
