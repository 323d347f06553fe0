"""Trains a GAN or a VAE: python train.py --config configs/NAME.py --workdir DIR [--config.KEY=V].

Rerunning the same command resumes from the newest checkpoint in DIR.
"""

from absl import app, flags
from ml_collections import config_flags

from genjax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "experiment config file (configs/*.py)")
flags.DEFINE_string("workdir", None, "directory for checkpoints, logs and samples")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}; flags are --config, --workdir, --config.KEY=V")
    config = cli.config_from_flags("config")
    from genjax.train import train_and_evaluate

    cli.run_or_exit(lambda: train_and_evaluate(config, FLAGS.workdir))


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
