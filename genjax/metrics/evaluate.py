"""Every quality metric that applies to a trained model and its data, as one flat dict.

    python -m genjax.evaluate --workdir DIR [--num_samples N] [--nll_k K]
        [--max_test M] [--seed S] [--inception_weights PATH] [--config.KEY=VALUE ...]

loads DIR's newest checkpoint, prints one JSON object and appends it to DIR/eval.jsonl with
the step and the settings. `--config.KEY=VALUE` overrides DIR/config.json (e.g.
`--config.data.test=idx:/data/mnist` scores on another test set); the flags left unset take
config.eval.*. Metrics (NaN is written as null):

- 2-D mixtures (ring8, grid25): `modes`, `hq_fraction`, `reverse_kl` (genjax.metrics.toy).
- VAEs: `test_nll` (importance sampled, k = nll_k) and `test_neg_elbo`, nats per example on
  the test split (genjax.metrics.nll).
- Images, per feature space S (`classifier`: a conv net trained on the data's labels;
  `inception`: the FID Inception, given its weights): `fd_S`, `kid_S`, `precision_S`,
  `recall_S`, `density_S`, `coverage_S` (genjax.metrics.features) between num_samples
  generated images and the test split; with the classifier also `classifier_test_accuracy`,
  `classes_covered` (classes predicted at least once) and `class_kl` (KL of the predicted
  class histogram to the test split's; genjax.metrics.classes). Each has a `_floor` twin:
  the same metric between the test split and as many real training images as generated
  ones, the value a perfect model would get at these sample sizes (the classifier was
  trained on those images, so its floor is slightly pessimistic).

What does not apply is left out; `skipped_metrics` says why (the CLI prints it on stderr),
so that `evaluate` returns only numbers for the training loop to log.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import jax
import numpy as np

from genjax.data.kinds import kind_of
from genjax.logs import json_number
from genjax.metrics import classes, features

SAMPLE_BATCH = 500  # generated samples per compiled call


@functools.cache
def _sampler(experiment, batch: int):
    return jax.jit(functools.partial(experiment.sample, num=batch))


def generate(experiment, state, key, num: int) -> np.ndarray:
    """`num` samples in data space (e.g. points, or [0, 1] images), SAMPLE_BATCH per compiled
    call."""
    batch = min(num, SAMPLE_BATCH)
    draw = _sampler(experiment, batch)
    parts = [np.asarray(draw(state, jax.random.fold_in(key, i))) for i in range(-(-num // batch))]
    return np.concatenate(parts)[:num]


def skipped_metrics(config, train_source, inception_weights: str = "") -> dict[str, str]:
    """Why a group of metrics does not apply to this model and data: {group: reason}."""
    return kind_of(train_source).skipped_metrics(config, train_source, inception_weights)


def _space_metrics(space, real, fake, floor, seed) -> dict:
    """One feature space's metrics of the model (real vs fake) and of real data (real vs floor)."""
    model = features.feature_metrics(real, fake, space, seed=seed)
    best = features.feature_metrics(real, floor, space, seed=seed)
    return model | {f"{name}_floor": value for name, value in best.items()}


def image_metrics(
    config, fake, real, floor, data_labels, *, seed, inception_weights, cdir, num_classes=None
):
    """Feature-space metrics of uint8 images: classifier and Inception, with their floors.

    `data_labels` give the data's class histogram (None: the data has no labels, no classifier).
    """
    from genjax.metrics import classifier as classifier_lib

    out = {}
    if data_labels is not None:
        data = config.data
        clf = classifier_lib.classifier_for(
            data.train, data.image_size, data.data_dir, cdir, tuple(real.shape[1:]), num_classes
        )
        (f_fake, c_fake), (f_real, _), (f_floor, c_floor) = (
            classifier_lib.outputs(clf, x) for x in (fake, real, floor)
        )
        n = clf.meta["num_classes"]
        out["classifier_test_accuracy"] = float(clf.meta["test_accuracy"])
        out |= _space_metrics("classifier", f_real, f_fake, f_floor, seed)
        out |= classes.class_metrics(c_fake, data_labels, n)
        out |= {f"{k}_floor": v for k, v in classes.class_metrics(c_floor, data_labels, n).items()}
    if inception_weights:
        from genjax.metrics import inception

        variables = inception.cached_variables(inception_weights)
        f_fake, f_real, f_floor = (
            inception.inception_features(variables, x) for x in (fake, real, floor)
        )
        out |= _space_metrics("inception", f_real, f_fake, f_floor, seed)
    return out


def evaluate(
    experiment,
    state,
    train_source,
    test_source,
    *,
    num_samples: int = 2500,
    nll_k: int = 5000,
    max_test: int = 0,
    seed: int = 0,
    inception_weights: str = "",
    classifier_dir: str = "",
) -> dict:
    """Flat {metric name: float} for a model state and its data: the family's test metrics
    (e.g. a VAE's NLL), then the data kind's metrics of generated samples.

    `max_test` > 0 keeps the first max_test test examples. The same seed gives the same
    samples, binarisation and subsets, so two evaluations of one state agree exactly.
    """
    if inception_weights:
        from genjax.metrics import inception

        inception.cached_variables(inception_weights)  # a bad file fails before any work
    key = jax.random.PRNGKey(seed)
    test = test_source.to_arrays()
    class_reference = test.get("label")  # the data's class histogram: the whole test split's
    if max_test:
        test = {name: array[:max_test] for name, array in test.items()}
    out: dict[str, float] = dict(experiment.test_metrics(state, test, k=nll_k, seed=seed))
    out |= experiment.kind.sample_metrics(
        experiment,
        lambda num: generate(experiment, state, key, num),
        train_source,
        test,
        class_reference=class_reference,
        num_samples=num_samples,
        seed=seed,
        inception_weights=inception_weights,
        classifier_dir=classifier_dir,
    )
    return out


def evaluate_workdir(workdir, config, *, num_samples, nll_k, max_test, seed, inception_weights):
    """The CLI's job: restore, evaluate, print the row and append it to workdir/eval.jsonl."""
    from genjax.experiment import restore

    run = restore(workdir, config)
    for group, reason in skipped_metrics(config, run.train_source, inception_weights).items():
        print(f"note: {group} metrics skipped: {reason}", file=sys.stderr)
    metrics = evaluate(
        run.experiment,
        run.state,
        run.train_source,
        run.test_source,
        num_samples=num_samples,
        nll_k=nll_k,
        max_test=max_test,
        seed=seed,
        inception_weights=inception_weights,
        classifier_dir=config.eval.classifier_dir,
    )
    settings = {
        "num_samples": num_samples,
        "nll_k": nll_k,
        "max_test": max_test,
        "seed": seed,
        "test_data": config.data.test or f"{config.data.train} (test split)",
    }
    row = {"step": int(run.step)} | {k: json_number(v) for k, v in metrics.items()}
    line = json.dumps(row | {"settings": settings})
    with open(Path(workdir) / "eval.jsonl", "a") as f:
        f.write(line + "\n")
    print(line)
    return row


def main(argv) -> None:
    from absl import flags

    from genjax import cli
    from genjax.config import ConfigError
    from genjax.experiment import load_config

    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}; flags are --workdir, ..., --config.KEY=V")
    f = flags.FLAGS

    def run():
        config = load_config(f.workdir)
        try:
            config.update_from_flattened_dict(dict(f["config"].override_values))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"--config override: {e}") from None
        cli.unset_fields(config)
        e = config.eval
        choose = lambda flag, default: default if flag is None else flag  # noqa: E731
        evaluate_workdir(
            f.workdir,
            config,
            num_samples=choose(f.num_samples, e.num_samples),
            nll_k=choose(f.nll_k, e.nll_k),
            max_test=choose(f.max_test, e.max_test),
            seed=f.seed,
            inception_weights=choose(f.inception_weights, e.inception_weights),
        )

    cli.run_or_exit(run)


def _define_flags() -> None:
    """The CLI's flags (defined only when run as a program, so importing this module from
    the training loop never clashes with train.py's --config)."""
    from absl import flags
    from ml_collections import config_flags

    from genjax.config import base_config

    flags.DEFINE_string("workdir", None, "a directory train.py has written")
    flags.DEFINE_integer("num_samples", None, "generated samples (default config.eval.*)", 1)
    flags.DEFINE_integer("nll_k", None, "importance samples per test example", lower_bound=1)
    flags.DEFINE_integer("max_test", None, "first M test examples (0 = all)", lower_bound=0)
    flags.DEFINE_integer("seed", 0, "seed of the samples, binarisation and subsets")
    flags.DEFINE_string("inception_weights", None, "FID Inception weights (.npz), '' = none")
    config_flags.DEFINE_config_dict("config", base_config(), "overrides of DIR/config.json")
    flags.mark_flags_as_required(["workdir"])
    for name in ("workdir", "num_samples", "nll_k", "max_test", "seed", "inception_weights"):
        # --help lists the main module's flags: list these under the program that runs
        flags.FLAGS.register_flag_by_module(sys.argv[0], flags.FLAGS[name])


def _unknown_config_keys(argv: list[str]) -> list[str]:
    """The KEYs of --config.KEY=V arguments that the base config does not have."""
    from genjax.config import base_config

    unknown = []
    for arg in argv:
        if arg.startswith("--config."):
            node = base_config()
            for part in arg[len("--config.") :].split("=")[0].split("."):
                if not hasattr(node, "keys") or part not in node.keys():
                    unknown.append(arg.split("=")[0][len("--") :])
                    break
                node = node[part]
    return unknown


def cli_main() -> None:
    """`python -m genjax.evaluate` (or `-m genjax.metrics.evaluate`)."""
    from absl import app

    from genjax import cli
    from genjax.backend import unroll_large_threefry_on_cpu

    unroll_large_threefry_on_cpu()  # as train.py does
    if unknown := _unknown_config_keys(sys.argv[1:]):
        cli.fail(f"unknown config key(s): {', '.join(unknown)}; see genjax/config.py")
    try:
        _define_flags()  # config_flags reads the --config.KEY=V arguments here
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        cli.fail(f"--config override: {type(e).__name__}: {e}")
    app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
    cli_main()
