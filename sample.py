"""Pictures or raw samples from a workdir's newest checkpoint.

    python sample.py --workdir DIR --out FILE.png [--num 64] [--seed S]
                     [--mode samples|interpolate|reconstruct|scatter]

`--out FILE.npz` writes the raw samples instead (`samples`: uint8 images NxHxWxC,
or float 2-D points Nx2), for outside tools to score.
"""

from pathlib import Path

from absl import app, flags

from genjax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "a directory train.py has written")
flags.DEFINE_string("out", None, "output file: .png (a picture) or .npz (raw samples)")
flags.DEFINE_integer(
    "num", 64, "samples (pairs for reconstruct; interpolate rounds up to rows of 8)", lower_bound=1
)
flags.DEFINE_integer("seed", 0, "random seed for the latents")
flags.DEFINE_enum(
    "mode", "samples", ["samples", "interpolate", "reconstruct", "scatter"], "what to draw"
)
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}")
    from genjax.backend import unroll_large_threefry_on_cpu
    from genjax.sampling import write_samples

    unroll_large_threefry_on_cpu()  # as train.py does

    cli.run_or_exit(
        lambda: write_samples(FLAGS.workdir, Path(FLAGS.out), FLAGS.num, FLAGS.seed, FLAGS.mode)
    )


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
