"""Trains a GAN or a VAE: python train.py --config configs/NAME.py --workdir DIR [--config.KEY=V].

Rerunning the same command resumes from the newest checkpoint in DIR. Several processes
(multi-host): add --coordinator_address HOST:PORT --num_processes N --process_id I, or
nothing on a TPU pod slice / under SLURM, where JAX finds them itself. If one of them is
lost, the others exit with code 5 within --peer_timeout seconds, naming it and the newest
complete checkpoint; the same command, on any number of processes, resumes from it.
"""

from absl import app, flags
from ml_collections import config_flags

from genjax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "experiment config file (configs/*.py)")
flags.DEFINE_string("workdir", None, "directory for checkpoints, logs and samples")
flags.DEFINE_string("coordinator_address", "", "multi-process: HOST:PORT of process 0")
flags.DEFINE_integer("num_processes", 0, "multi-process: number of processes", lower_bound=0)
flags.DEFINE_integer("process_id", -1, "multi-process: this process's index")
flags.DEFINE_float(
    "peer_timeout",
    30.0,
    "multi-process: seconds without another process's heartbeat before the others exit "
    "(code 5), naming it and the checkpoint to resume from",
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}; flags are --config, --workdir, --config.KEY=V")
    config = cli.config_from_flags("config")
    from genjax import train
    from genjax.backend import unroll_large_threefry_on_cpu
    from genjax.parallel import initialize_distributed

    unroll_large_threefry_on_cpu()  # the same random bits as jax's own lowering, faster on CPU

    def run():
        initialize_distributed(
            FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, FLAGS.peer_timeout
        )
        try:
            train.train_and_evaluate(config, FLAGS.workdir)
        except train.Diverged as e:
            cli.fail(e, train.DIVERGED_EXIT_CODE)

    cli.run_or_exit(run)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
