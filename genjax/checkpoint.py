"""Checkpoints with orbax: asynchronous saves, and restore of the newest one that restores.

Orbax's `latest_step()` still names a step whose files are damaged (truncated), and
restoring it raises (e.g. "Truncated Zstd-compressed stream"); orbax has no automatic
fallback, so `restore_latest` walks back to the newest step that does restore and logs what
it skipped, deleting nothing.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


# orbax's coroutines that open and read one array of a checkpoint being restored
_READ_COROUTINES = ("async_deserialize", "_read_array_index_and_device_put")


# The checkpoint folders (absolute paths) a restore has failed on in this process
_FAILED_RESTORES: set[str] = set()


def _names_failed_restore(text: str) -> bool:
    return any(directory in text for directory in _FAILED_RESTORES)


def _from_abandoned_read(error: BaseException | None, source: object = None) -> bool:
    """Whether a report is of a read that a failed restore left behind (see below)."""
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        return True
    if error is not None and _names_failed_restore(str(error)):  # tensorstore's own futures
        return True
    if getattr(source, "__qualname__", "").endswith(_READ_COROUTINES):
        return True
    tb = getattr(error, "__traceback__", None)
    while tb is not None:
        if tb.tb_frame.f_code.co_name in _READ_COROUTINES:
            return True
        tb = tb.tb_next
    return False


def _silence_abandoned_reads() -> None:
    """Drops Python's reports of the reads a failed restore leaves behind.

    When one array of a checkpoint does not open or read, orbax's restore raises and closes its
    event loop while the other arrays' reads are still in flight; as they finish or are collected,
    Python reports each one, as an unraisable exception (`Event loop is closed`, or the read's
    own error), as asyncio's "Task/Future exception was never retrieved", or, for a read that
    never started, as a RuntimeWarning that the coroutine was never awaited: hundreds of
    tracebacks on stderr around the one warning that says what happened. Only those reports
    are dropped (known by orbax's coroutines in them, or, for tensorstore's own futures, which
    carry no Python frames, by the failed step's folder in their text); any other goes on.
    """
    previous = sys.unraisablehook
    if getattr(previous, "drops_abandoned_reads", False):
        return

    def hook(unraisable):
        if not _from_abandoned_read(unraisable.exc_value, unraisable.object):
            previous(unraisable)

    def keep(record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        message = record.getMessage()
        mentioned = any(f"coro=<{name}(" in message for name in _READ_COROUTINES)
        failed = "never retrieved" in message and _names_failed_restore(message)
        return not (mentioned or failed or _from_abandoned_read(error))

    hook.drops_abandoned_reads = True
    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(keep)
    names = "|".join(_READ_COROUTINES)  # reads that never started, collected
    warnings.filterwarnings("ignore", f"coroutine '({names})' was never awaited", RuntimeWarning)


# An OS-level failure in a report: Python's OSError text, or tensorstore's error code
_OS_ERROR = re.compile(r"\[Errno \d+\]|os_error_code=")


def _keep_unless_failed_write(record: logging.LogRecord) -> bool:
    """False for orbax's report of a save that the file system failed (see below)."""
    if f"{os.sep}orbax{os.sep}" not in record.pathname:
        return True
    texts, error = [record.getMessage()], record.exc_info[1] if record.exc_info else None
    while error is not None:
        if isinstance(error, OSError):
            return False
        texts.append(str(error))
        error = error.__cause__ or error.__context__
    return not any(_OS_ERROR.search(text) for text in texts)


def _silence_failed_writes() -> None:
    """Drops orbax's reports of a save that the file system failed (a disk that fills up).

    Orbax saves in background threads; when a write fails, each thread logs the error with
    its traceback (hundreds of lines), and orbax raises it as an OSError at the next save or
    wait, which train.py reports as one line (`error: I/O error: ...`, exit 4). Only those
    reports are dropped; any other orbax log record goes on as before. (The filter is one
    module-level function, so adding it again is a no-op.)
    """
    logging.getLogger("absl").addFilter(_keep_unless_failed_write)  # orbax logs through absl


def newest_complete_step(directory: str | Path) -> int | None:
    """The newest step in `directory` whose save orbax finalised, from the file system alone.

    Safe to call while another thread is saving, or a peer process is gone: no barrier and no
    CheckpointManager. Orbax writes a step in a temporary folder and renames it to `<step>`
    once every process has written its part, so a save cut short is never counted.
    """
    steps = ocp.utils.checkpoint_steps(directory) if Path(directory).is_dir() else []
    return max(steps, default=None)


def resume_hint(directory: str | Path) -> str:
    """'; the newest complete checkpoint is ...; rerun ...': what a run that stops with a
    lost process says about resuming."""
    step = newest_complete_step(directory)
    if step is None:
        return f"; no complete checkpoint in {directory}: rerun the same command on every process"
    return (
        f"; the newest complete checkpoint is step {step} ({Path(directory) / str(step)}): "
        "rerun the same command on every process to resume from it"
    )


class Checkpoints:
    """The checkpoints of one workdir: `state` (a pytree) and `data` (iterator state, JSON)."""

    def __init__(self, directory: str | Path, keep: int = 3, read_only: bool = False):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=True,
            create=not read_only,
            read_only=read_only,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        if not read_only:
            _silence_failed_writes()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, data_state: dict | None = None) -> None:
        """Starts an asynchronous save of `state` at `step` (no-op if that step exists)."""
        if step in self.manager.all_steps():
            return
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state or {}),
        )
        self.manager.save(step, args=args, force=True)

    def restore(self, step: int, template: Any) -> tuple[Any, dict]:
        """(state, data_state) saved at `step`, with the structure and dtypes of `template`."""
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(template),
            data=ocp.args.JsonRestore(),
        )
        restored = self.manager.restore(step, args=args)
        return restored["state"], dict(restored["data"] or {})

    def restore_latest(self, template: Any, set_aside: bool = False):
        """The newest checkpoint that restores, as (step, state, data_state); None if none.

        A step that does not restore is logged and skipped. With `set_aside`, once an older
        step has restored, the folders of the newer ones are renamed `<step>.damaged` (kept,
        not deleted) so that training can write those steps again. If checkpoints exist but
        none restores (damage everywhere, or a template of another model), nothing is renamed
        and the last error is raised.
        """
        error, failed = None, []
        _silence_abandoned_reads()
        for step in reversed(self.steps()):
            try:
                state, data_state = self.restore(step, template)
            except Exception as e:  # noqa: BLE001 - any failure means "try an older one"
                _FAILED_RESTORES.add(f"{self.directory / str(step)}{os.sep}")
                error = e
                failed.append(step)
                log.warning(
                    "checkpoint at step %d does not restore (%s: %s); skipped",
                    step,
                    type(e).__name__,
                    " ".join(str(e).split())[:300],
                )
                continue
            for bad in failed if set_aside else ():
                where = self._set_aside(bad)
                if where:
                    log.warning("checkpoint at step %d moved to %s", bad, where)
            return step, state, data_state
        if error is not None:
            raise error
        return None

    def _set_aside(self, step: int) -> Path | None:
        source = self.directory / str(step)
        if not source.is_dir():
            return None
        target = self.directory / f"{step}.damaged"
        n = 1
        while target.exists():
            target, n = self.directory / f"{step}.damaged{n}", n + 1
        source.rename(target)
        self.manager.reload()
        return target

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
