"""Pictures or raw samples from a workdir's newest checkpoint.

    python sample.py --workdir DIR --out FILE.png [--num 64] [--seed S]
                     [--mode samples|interpolate|reconstruct|scatter] [--class K]
    python sample.py --workdir DIR --mode inpaint --mask bottom|top|left|right|centre|random:P
                     [--inputs SOURCE] [--num_fills F] --out FILE.npz|FILE.png
    python sample.py --workdir DIR --mode dataset --num N [--class K] --out FILE.npz

`--out FILE.npz` writes the raw samples instead (`samples`: uint8 images NxHxWxC,
or float 2-D points Nx2), for outside tools to score; a class-conditional model's also hold
`labels` (N,), the class of each sample. `--class K` draws only class K from such a model
(by default every class in turn). A model of token data also writes `--out FILE.txt`:
sentences (`--temperature T`, 0 = greedy), reconstructions, or homotopies between two
sentences, of the test split or of `--sentences FILE` (genjax/text_sampling.py).

`--mode inpaint` fills the masked pixels of the first N examples of a data source (default:
the training source's test split): .npz `inputs`, `masks` (1 = known) and `samples` (N, F,
...), the known pixels kept exactly. `--mode dataset` writes N samples as `images` [+ `labels`],
a data set that `npz:FILE` reads (docs/training.md#samplepy).
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
    "mode",
    "samples",
    ["samples", "interpolate", "reconstruct", "scatter", "inpaint", "dataset"],
    "what to draw",
)
flags.DEFINE_integer(
    "class", None, "a class-conditional model's class to draw (default: every class in turn)"
)
flags.DEFINE_float("temperature", None, "text: sampling temperature (0 = greedy); --out FILE.txt")
flags.DEFINE_string("sentences", None, "text: a file of sentences to reconstruct or interpolate")
flags.DEFINE_string("inputs", None, "inpaint: a data source spec (default: the test split)")
flags.DEFINE_string("mask", None, "inpaint: bottom, top, left, right, centre or random:P")
flags.DEFINE_integer("num_fills", 1, "inpaint: fills per input")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}")
    from genjax.backend import unroll_large_threefry_on_cpu
    from genjax.sampling import write_samples

    unroll_large_threefry_on_cpu()  # as train.py does

    cli.run_or_exit(
        lambda: write_samples(
            FLAGS.workdir,
            Path(FLAGS.out),
            FLAGS.num,
            FLAGS.seed,
            FLAGS.mode,
            FLAGS["class"].value,
            FLAGS.temperature,
            FLAGS.sentences,
            FLAGS.inputs,
            FLAGS.mask,
            FLAGS.num_fills,
        )
    )


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
