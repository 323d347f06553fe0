"""Runs a plan of small trainings as one of M JAX processes (tests/test_multihost.py).

Each job of the plan trains configs/CONFIG.py (its "config", default vae_mlp_mnist) with its
`--config.KEY=V` overrides in its workdir, resuming from the checkpoints there (written by
any number of processes), or expects a ConfigError with the text it names; process 0 leaves
the log lines in WORKDIR.log and the error in WORKDIR.error. The jobs run one after the
other in one jax.distributed job, so that the processes start and compile once.
Usage: multihost_check.py PLAN_JSON NUM_PROCESSES PROCESS_ID PORT
"""

import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

os.environ["JAX_PLATFORMS"] = "cpu"

ROOT = Path(__file__).resolve().parents[1]


def job_config(name: str, overrides: dict):
    """configs/NAME.py with `overrides` ({'KEY': value}), as train.py's `--config.KEY=value`
    arguments set them."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def run_jobs(jobs: list[dict], process_id: int) -> None:
    """Trains each job's workdir; process 0 writes genjax.train's log lines to WORKDIR.log and
    the expected ConfigError's message to WORKDIR.error."""
    from genjax.config import ConfigError
    from genjax.train import train_and_evaluate

    logger = logging.getLogger("genjax.train")
    for job in jobs:
        workdir = Path(job["workdir"])
        lines = _Lines()
        logger.addHandler(lines)
        level, logger.level = logger.level, logging.INFO
        try:
            config = job_config(job.get("config", "vae_mlp_mnist"), job["overrides"])
            train_and_evaluate(config, workdir)
        except ConfigError as e:
            if not job.get("error") or job["error"] not in str(e):
                raise
            if process_id == 0:
                workdir.with_suffix(".error").write_text(str(e))
            continue
        finally:
            logger.removeHandler(lines)
            logger.level = level
        assert not job.get("error"), f"{workdir}: no ConfigError"
        if process_id == 0:
            workdir.with_suffix(".log").write_text("\n".join(lines.lines) + "\n")


def main(plan_path, num_processes, process_id, port):
    from genjax.backend import unroll_large_threefry_on_cpu
    from genjax.parallel import initialize_distributed

    unroll_large_threefry_on_cpu()  # as train.py: the same random bits, faster
    initialize_distributed(f"127.0.0.1:{port}", num_processes, process_id)
    import jax

    assert jax.process_count() == num_processes
    run_jobs(json.loads(Path(plan_path).read_text())["jobs"], process_id)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
