"""What the command-line programs share: flag parsing and user errors as one line, exit 2."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from absl import flags

from genjax.config import ConfigError

USAGE_ERROR = 2  # bad input: flags, config, paths, data
IO_ERROR = 4  # the file system failed during the run (disk full, read-only)
PEER_LOST = 5  # a process of a multi-process job was lost (genjax.parallel.PeerWatchdog)


def fail(message: str, code: int = USAGE_ERROR, run_exit_handlers: bool = True):
    """Prints `error: message` as one line on stderr and exits with `code`."""
    print("error: " + " ".join(str(message).split()), file=sys.stderr, flush=True)
    if not run_exit_handlers:
        sys.stdout.flush()
        os._exit(code)
    sys.exit(code)


UNSET_FIELDS: list[str] = []  # KEYs of --config.KEY=None arguments (see unset_fields)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, but a bad flag is one line and exit 2 (not usage + exit 1).

    `--config.KEY=None` arguments are taken out first (config flags parse a value of the
    field's type) and applied by `unset_fields` once the config has loaded."""
    kept = []
    for arg in argv:
        match = re.fullmatch(r"--config\.([\w.]+)=None", arg)
        if match:
            UNSET_FIELDS.append(match.group(1))
        else:
            kept.append(arg)
    argv = kept
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(e)
    except Exception as e:  # noqa: BLE001 - parsing loads --config files: any error in one
        # (and ml_collections' ValueError, KeyError, ... for a bad --config.KEY override).
        fail(f"{type(e).__name__}: {e}")


def unset_fields(config):
    """Sets each field named by a `--config.KEY=None` argument to None: "the chosen model's (or
    family's) default", or unset, for a field the chosen model does not read (e.g. after
    `--config.model.name=...` picks a model that reads other fields). Only `model.*` and
    family fields can be None; ConfigError for any other key."""
    from genjax.config import base_config

    base = base_config()
    for key in UNSET_FIELDS:
        node, reference = config, base
        *parents, leaf = key.split(".")
        for part in parents:
            if part not in node.keys() or part not in reference.keys():
                raise ConfigError(f"--config.{key}=None: unknown config key")
            node, reference = node[part], reference[part]
        if leaf not in reference.keys() or reference[leaf] is not None:
            raise ConfigError(
                f"--config.{key}=None: only model.* and family fields (gan.*, vae.*, ...) can "
                "be None; give a value"
            )
        node[leaf] = None
    return config


def config_from_flags(name: str = "config"):
    """The ConfigDict of a config_flags flag; a missing or failing config file exits 2."""
    path = flags.FLAGS[name].config_filename if name in flags.FLAGS else None
    if path and not Path(path.split(":")[0]).is_file():
        known = sorted(p.name for p in Path("configs").glob("*.py") if not p.stem.startswith("_"))
        fail(f"--{name} {path}: no such file; configs/ holds {', '.join(known) or 'nothing'}")
    try:
        config = getattr(flags.FLAGS, name)
    except Exception as e:  # noqa: BLE001 - any failure to load a user's config file
        fail(f"--{name} {path}: cannot load it ({type(e).__name__}: {e})")
    try:
        return unset_fields(config)
    except ConfigError as e:
        fail(e)


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
