"""Every quality metric that applies to a trained model and its data, as one flat dict.

    python -m genjax.evaluate --workdir DIR [--num_samples N] [--nll_k K]
        [--max_test M] [--seed S] [--inception_weights PATH] [--inpaint_mask SPEC]
        [--config.KEY=VALUE ...]

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
  trained on those images, so its floor is slightly pessimistic). A class-conditional model
  also gets `class_accuracy`, the fraction of its samples that the classifier assigns to the
  class they were drawn for (every class equally often), beside `class_accuracy_floor`, the
  classifier's accuracy on the labelled test images.
- Inpainting, with `--inpaint_mask SPEC` (genjax.inpaint's masks, e.g. bottom, random:0.5):
  `inpaint_mse`, the mean squared error in [0, 1] units over the masked pixels of the test
  images, of the average of INPAINT_FILLS fills of each (the model's estimate of
  E[x_missing | x_known], the fill that minimises squared error), and `inpaint_mse_one_fill`,
  of the first fill alone (a sample, as a picture shows), beside `inpaint_mse_mean_image` and
  `inpaint_mse_nearest`, the same for the mean training image and for the training image
  nearest on the known pixels.

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
INPAINT_FILLS = 8  # fills per test image averaged into inpaint_mse's estimate


@functools.cache
def _sampler(experiment, batch: int):
    return jax.jit(functools.partial(experiment.sample, num=batch))


def generate(experiment, state, key, num: int) -> np.ndarray:
    """`num` samples in data space (e.g. points, or [0, 1] images), SAMPLE_BATCH per compiled
    call; a class-conditional model's of the classes experiment.sample_labels(num)."""
    batch = min(num, SAMPLE_BATCH)
    draw = _sampler(experiment, batch)
    calls = -(-num // batch)
    labels = experiment.sample_labels(num)
    if labels is not None:  # padded to whole calls
        labels = np.resize(np.asarray(labels), calls * batch).reshape(calls, batch)
    parts = [
        np.asarray(
            draw(state, jax.random.fold_in(key, i), labels=None if labels is None else labels[i])
        )
        for i in range(calls)
    ]
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
    config,
    fake,
    real,
    floor,
    data_labels,
    *,
    seed,
    inception_weights,
    cdir,
    num_classes=None,
    fake_labels=None,
    real_labels=None,
):
    """Feature-space metrics of uint8 images: classifier and Inception, with their floors.

    `data_labels` give the data's class histogram (None: the data has no labels, no classifier).
    `fake_labels`, the classes a class-conditional model's samples were drawn for, add
    `class_accuracy`, with the classifier's accuracy on `real` of `real_labels` as its floor.
    """
    from genjax.metrics import classifier as classifier_lib

    out = {}
    if data_labels is not None:
        data = config.data
        clf = classifier_lib.classifier_for(
            data.train, data.image_size, data.data_dir, cdir, tuple(real.shape[1:]), num_classes
        )
        (f_fake, c_fake), (f_real, c_real), (f_floor, c_floor) = (
            classifier_lib.outputs(clf, x) for x in (fake, real, floor)
        )
        n = clf.meta["num_classes"]
        out["classifier_test_accuracy"] = float(clf.meta["test_accuracy"])
        out |= _space_metrics("classifier", f_real, f_fake, f_floor, seed)
        out |= classes.class_metrics(c_fake, data_labels, n)
        out |= {f"{k}_floor": v for k, v in classes.class_metrics(c_floor, data_labels, n).items()}
        if fake_labels is not None:
            out["class_accuracy"] = classes.class_accuracy(c_fake, fake_labels)
            out["class_accuracy_floor"] = classes.class_accuracy(c_real, real_labels)
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
    inpaint_mask: str = "",
) -> dict:
    """Flat {metric name: float} for a model state and its data: the family's test metrics
    (e.g. a VAE's NLL), then the data kind's metrics of generated samples, then with
    `inpaint_mask` the inpainting metrics (inpaint_metrics).

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
    if inpaint_mask:  # a bad mask or model fails before any work
        check_inpaint(experiment, test, inpaint_mask)
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
    if inpaint_mask:
        out |= inpaint_metrics(experiment, state, train_source, test, inpaint_mask, seed=seed)
    return out


def check_inpaint(experiment, test: dict, mask: str) -> None:
    """ConfigError unless `mask` parses and the model can inpaint the test examples."""
    from genjax import inpaint
    from genjax.config import ConfigError
    from genjax.data.kinds import LABEL
    from genjax.sampling import SPECIAL_MODES

    inpaint.parse_mask(mask)
    if "inpaint" not in experiment.modes:
        raise ConfigError(SPECIAL_MODES["inpaint"](experiment).replace("--mode", "--inpaint_mask"))
    if experiment.num_classes and LABEL not in test:
        raise ConfigError("--inpaint_mask: a class-conditional model needs labelled test data")


def inpaint_metrics(
    experiment,
    state,
    train_source,
    test: dict,
    mask: str,
    *,
    seed: int = 0,
    num_fills: int = INPAINT_FILLS,
):
    """The inpainting scores of the test examples with masks `mask` (numpy seed `seed` for
    random ones), each a mean squared error over the masked pixels in [0, 1] units:
    `inpaint_mse` of the average of `num_fills` fills per example (independent chains or
    latents: a Monte Carlo estimate of E[x_missing | x_known], the squared-error-optimal
    fill), `inpaint_mse_one_fill` of the first fill alone, and the two baselines
    `inpaint_mse_mean_image` and `inpaint_mse_nearest` (genjax.inpaint.baseline_fills). A
    class-conditional model fills each example as its own label."""
    from genjax import inpaint

    check_inpaint(experiment, test, mask)
    kind, unit = experiment.kind, (0.0, 1.0)
    x = np.asarray(kind.from_model(kind.model_input(test, unit), unit), np.float32)
    n = len(x)
    masks = inpaint.make_masks(mask, n, experiment.data_shape, seed)
    batch = min(n, max(1, SAMPLE_BATCH // num_fills))
    key = jax.random.PRNGKey(seed)
    fills = []
    for i, start in enumerate(range(0, n, batch)):
        rows = np.resize(np.arange(start, min(start + batch, n)), batch)  # whole batches
        part = {name: array[rows] for name, array in test.items()}
        key_i = jax.random.fold_in(key, i)
        out = experiment.inpaint(state, part, masks[rows], key_i, num_fills=num_fills)
        fills.append(np.asarray(out, np.float32)[: min(batch, n - start)])
    fills = np.concatenate(fills)  # (N, num_fills, H, W, C)
    train = train_source.to_arrays()
    train_x = np.asarray(kind.from_model(kind.model_input(train, unit), unit), np.float32)
    baselines = inpaint.baseline_fills(train_x, x, masks)
    return {
        "inpaint_mse": inpaint.masked_mse(fills.mean(axis=1), x, masks),
        "inpaint_mse_one_fill": inpaint.masked_mse(fills[:, 0], x, masks),
        "inpaint_mse_mean_image": inpaint.masked_mse(baselines["mean_image"], x, masks),
        "inpaint_mse_nearest": inpaint.masked_mse(baselines["nearest"], x, masks),
    }


def evaluate_workdir(
    workdir,
    config,
    *,
    num_samples,
    nll_k,
    max_test,
    seed,
    inception_weights,
    inpaint_mask="",
):
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
        inpaint_mask=inpaint_mask,
    )
    settings = {
        "num_samples": num_samples,
        "nll_k": nll_k,
        "max_test": max_test,
        "seed": seed,
        "test_data": config.data.test or f"{config.data.train} (test split)",
    }
    if inpaint_mask:
        settings["inpaint_mask"] = inpaint_mask
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
            inpaint_mask=f.inpaint_mask,
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
    flags.DEFINE_string("inpaint_mask", "", "a mask for inpaint_mse (e.g. bottom); '' = none")
    config_flags.DEFINE_config_dict("config", base_config(), "overrides of DIR/config.json")
    flags.mark_flags_as_required(["workdir"])
    names = ("workdir", "num_samples", "nll_k", "max_test", "seed", "inception_weights")
    for name in (*names, "inpaint_mask"):
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
