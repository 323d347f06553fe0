"""Checkpoints with orbax: asynchronous saves, and restore of the newest one that restores.

Orbax's `latest_step()` still names a step whose files are damaged, and restoring it
raises (DESIGN.md, fact 6); `restore_latest` walks back to the newest step that does
restore and logs what it skipped, deleting nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


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

    def restore_latest(self, template: Any) -> tuple[int, Any, dict] | None:
        """The newest checkpoint that restores, as (step, state, data_state); None if none.

        Raises the last error if checkpoints exist but none restores.
        """
        error = None
        for step in reversed(self.steps()):
            try:
                state, data_state = self.restore(step, template)
                return step, state, data_state
            except Exception as e:  # noqa: BLE001 - any failure means "try an older one"
                log.warning("checkpoint at step %d does not restore, skipped: %s", step, e)
                error = e
        if error is not None:
            raise error
        return None

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
