"""The evaluate and classifier CLIs end to end, on tiny trained workdirs."""

import json
import shutil
import struct
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import run_cli

EVALUATE = ("-m", "genjax.evaluate")
IMAGE_METRICS = ("fd", "kid", "precision", "recall", "density", "coverage")
CLASSIFIER_KEYS = {f"{m}_classifier" for m in IMAGE_METRICS} | {"classes_covered", "class_kl"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A ring8 GAN (200 steps), an MNIST VAE (50 steps) and a quickly trained mnist5k
    classifier in a private cache (not ~/.cache), prepared by three concurrent processes."""
    root = tmp_path_factory.mktemp("trained")
    jobs = {
        "ring": ("train.py", "--config", "configs/gan_ring8.py", "--workdir", root / "ring",
                 "--config.num_steps=200"),
        "vae": ("train.py", "--config", "configs/vae_mlp_mnist.py", "--workdir", root / "vae",
                "--config.num_steps=50"),
        "classifiers": ("-m", "genjax.metrics.classifier", "--data", "mnist5k", "--steps", "20",
                        "--classifier_dir", root / "classifiers"),
    }  # fmt: skip
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = dict(zip(jobs, pool.map(lambda args: run_cli(*args), jobs.values()), strict=True))
    for name, r in results.items():
        assert r.returncode == 0, (name, r.stderr[-3000:])
    meta = json.loads(results["classifiers"].stdout.strip().splitlines()[-1])
    assert meta["spec"] == "mnist5k" and meta["steps"] == 20 and 0 <= meta["test_accuracy"] <= 1
    classifiers = root / "classifiers"
    assert (classifiers / "mnist5k.msgpack").is_file() and (classifiers / "mnist5k.json").is_file()
    return {name: root / name for name in jobs}


@pytest.fixture(scope="module")
def ring_workdir(trained):
    return trained["ring"]


@pytest.fixture(scope="module")
def vae_workdir(trained):
    return trained["vae"]


@pytest.fixture(scope="module")
def classifier_dir(trained):
    return trained["classifiers"]


def evaluate(workdir, *flags):
    r = run_cli(*EVALUATE, "--workdir", workdir, *flags)
    assert r.returncode == 0, r.stderr[-3000:]
    row = json.loads(r.stdout.strip().splitlines()[-1])
    return row, r.stderr


def eval_rows(workdir):
    return [json.loads(line) for line in (workdir / "eval.jsonl").read_text().splitlines()]


def test_ring_prints_mode_metrics_and_appends_them(ring_workdir):
    from genjax.experiment import restore
    from genjax.metrics.evaluate import evaluate as evaluate_in_process

    row, _ = evaluate(ring_workdir, "--num_samples", "500")
    assert set(row) == {"step", "modes", "hq_fraction", "reverse_kl", "settings"}
    assert row["step"] == 200 and 0 <= row["modes"] <= 8 and 0 <= row["hq_fraction"] <= 1
    assert row["settings"]["num_samples"] == 500
    assert eval_rows(ring_workdir) == [row]
    run = restore(ring_workdir)
    again = evaluate_in_process(
        run.experiment, run.state, run.train_source, run.test_source, num_samples=500
    )
    assert set(again) == {"modes", "hq_fraction", "reverse_kl"}
    for name, value in again.items():  # same seed, same numbers (NaN is written as null)
        assert row[name] == (None if np.isnan(value) else value)


def test_vae_on_another_test_set_gets_likelihoods_and_classifier_metrics(
    vae_workdir, classifier_dir, tmp_path
):
    from genjax.data import load_source

    other = tmp_path / "other.npz"
    np.savez(other, images=load_source("mnist5k", "test").to_arrays()["image"][::10])  # 50
    row, stderr = evaluate(
        vae_workdir,
        "--num_samples", "64", "--nll_k", "20", "--max_test", "40",
        f"--config.data.test=npz:{other}",
        f"--config.eval.classifier_dir={classifier_dir}",
    )  # fmt: skip
    metrics = set(row) - {"step", "settings"}
    expected = {"test_nll", "test_neg_elbo", "classifier_test_accuracy"} | CLASSIFIER_KEYS
    assert metrics == expected | {f"{k}_floor" for k in CLASSIFIER_KEYS}
    assert "inception metrics skipped" in stderr
    assert row["test_nll"] <= row["test_neg_elbo"]  # the k-sample bound is tighter than the ELBO
    assert 0 < row["test_nll"] < 784 * np.log(2)  # better than a coin per pixel
    assert row["fd_classifier_floor"] < row["fd_classifier"]  # 50 steps: far from the data
    assert row["classes_covered_floor"] >= 8  # 64 real digits, a classifier of 20 steps
    assert row["settings"] == {
        "num_samples": 64,
        "nll_k": 20,
        "max_test": 40,
        "seed": 0,
        "test_data": f"npz:{other}",
    }
    assert eval_rows(vae_workdir) == [row]


def write_idx(path, array):
    """A minimal uint8 IDX file: magic 0 0 8 ndim, big-endian uint32 dimensions, the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, np.uint8).tobytes())


def test_vae_on_an_idx_folder_of_only_t10k_files(vae_workdir, classifier_dir, tmp_path):
    from genjax.data import load_source

    digits = load_source("mnist5k", "test").to_arrays()
    folder = tmp_path / "t10k"
    folder.mkdir()
    write_idx(folder / "t10k-images-idx3-ubyte", digits["image"][::20, ..., 0])  # 25 of 28x28
    write_idx(folder / "t10k-labels-idx1-ubyte", digits["label"][::20])
    workdir = tmp_path / "run"
    shutil.copytree(vae_workdir, workdir, ignore=shutil.ignore_patterns("eval.jsonl"))
    row, _ = evaluate(
        workdir,
        "--num_samples", "32", "--nll_k", "5", "--max_test", "25",
        f"--config.data.test=idx:{folder}",
        f"--config.eval.classifier_dir={classifier_dir}",
    )  # fmt: skip
    assert row["settings"]["test_data"] == f"idx:{folder}"
    assert np.isfinite(row["test_nll"]) and np.isfinite(row["fd_classifier"])


def assert_one_line_error(result, *words):
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    for word in words:
        assert word in errors[0], errors[0]


BAD_INPUT = {
    "missing workdir": (["--workdir", "/no/such/workdir"], ["/no/such/workdir"]),
    "unknown config key": (["--config.no_such_key=1"], ["no_such_key"]),
    "wrong type": (["--config.eval.nll_k=many"], ["nll_k"]),
    "stray argument": (["extra"], ["extra"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_one_line_and_exit_2(ring_workdir, case):
    flags, words = BAD_INPUT[case]
    if case != "missing workdir":
        flags = ["--workdir", str(ring_workdir), *flags]
    log = ring_workdir / "eval.jsonl"
    before = log.read_text() if log.exists() else None
    assert_one_line_error(run_cli(*EVALUATE, *flags), *words)
    assert (log.read_text() if log.exists() else None) == before


def test_classifier_cli_rejects_unlabelled_points(tmp_path):
    r = run_cli(
        "-m", "genjax.metrics.classifier", "--data", "ring8", "--steps", "1",
        "--classifier_dir", tmp_path,
    )  # fmt: skip
    assert_one_line_error(r, "ring8")


def test_inception_metrics_are_wired_with_floors(monkeypatch, tmp_path):
    """The Inception branch of the image metrics, its network replaced by a cheap stand-in."""
    from genjax.config import base_config
    from genjax.metrics import evaluate as evaluate_lib
    from genjax.metrics import features, inception

    def pooled(variables, images):  # 4 x 4 mean-pooled pixels: (N, 49) features
        x = np.asarray(images, np.float64).reshape(len(images), 7, 4, 7, 4)
        return x.mean(axis=(2, 4)).reshape(len(images), -1)

    monkeypatch.setattr(inception, "cached_variables", lambda path: {"path": path})
    monkeypatch.setattr(inception, "inception_features", pooled)
    rng = np.random.default_rng(0)
    real, fake, floor = (rng.integers(0, 256, (n, 28, 28, 1), np.uint8) for n in (30, 20, 25))
    out = evaluate_lib.image_metrics(
        base_config(), fake, real, floor, None, seed=0, inception_weights="w.npz", cdir=""
    )
    names = {f"{m}_inception" for m in IMAGE_METRICS}
    assert set(out) == names | {f"{n}_floor" for n in names}
    assert out["fd_inception"] == features.frechet_distance(pooled(None, real), pooled(None, fake))
    assert out["fd_inception_floor"] == features.frechet_distance(
        pooled(None, real), pooled(None, floor)
    )
    model = features.feature_metrics(pooled(None, real), pooled(None, fake), "inception", seed=0)
    best = features.feature_metrics(pooled(None, real), pooled(None, floor), "inception", seed=0)
    assert out == model | {f"{name}_floor": value for name, value in best.items()}
    assert out["precision_inception"] != out["recall_inception"]  # real and fake not symmetric


def test_sample_batches_draw_from_their_own_keys(monkeypatch):
    """generate() folds the batch index into the key: 10 samples in batches of 4 are 3 draws."""
    import jax

    from genjax import experiment
    from genjax.config import base_config
    from genjax.metrics import evaluate as evaluate_lib

    c = base_config()  # toy_mlp, a 2-D GAN
    c.model.hidden, c.model.depth = 8, 1
    exp = experiment.build(c, "point", (2,))
    state = exp.init_state(jax.random.PRNGKey(0))
    monkeypatch.setattr(evaluate_lib, "SAMPLE_BATCH", 4)
    key = jax.random.PRNGKey(1)
    got = evaluate_lib.generate(exp, state, key, 10)
    assert got.shape == (10, 2) and len(np.unique(got, axis=0)) == 10
    draws = [exp.sample(state, jax.random.fold_in(key, i), 4) for i in range(3)]
    np.testing.assert_allclose(got, np.concatenate(draws)[:10], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("conditional", [False, True])
def test_classifier_metrics_are_wired_with_all_test_labels(monkeypatch, conditional):
    """evaluate()'s classifier branch with a stand-in classifier and sampler: each metric is
    the direct call on the stand-in's features and classes, and the class histogram of the
    data is the whole test split's, even when max_test scores fewer test images. A
    class-conditional model also gets class_accuracy: the stand-in's classes of the samples
    against the classes they were drawn for, and of the scored test images against theirs."""
    from types import SimpleNamespace

    from genjax import sampling
    from genjax.config import base_config
    from genjax.data.arrays import ArraySource
    from genjax.data.kinds import KINDS
    from genjax.metrics import classes, classifier, features
    from genjax.metrics import evaluate as evaluate_lib

    def pooled(images):  # 4 x 4 mean-pooled pixels: (N, 4) features
        return np.asarray(images, np.float64).reshape(len(images), 2, 4, 2, 4).mean((2, 4))

    def stand_in_outputs(clf, images, batch_size=500):
        f = pooled(images).reshape(len(images), -1)
        return f, np.minimum(f.mean(1) // 64, 2).astype(np.int64)  # 3 brightness classes

    rng = np.random.default_rng(0)
    test_labels = np.repeat([1, 0, 2], [6, 6, 6])  # the first 6 are all class 1
    test = ArraySource(
        {"image": rng.integers(0, 256, (18, 8, 8, 1), np.uint8), "label": test_labels},
        "image",
        3,
    )
    train_labels = rng.integers(0, 3, 40)
    train = ArraySource(
        {"image": rng.integers(0, 200, (40, 8, 8, 1), np.uint8), "label": train_labels},
        "image",
        3,
    )
    fake01 = rng.uniform(0.1, 0.9, (20, 8, 8, 1)) ** 2
    monkeypatch.setattr(evaluate_lib, "generate", lambda exp, state, key, num: fake01[:num])
    clf = SimpleNamespace(meta={"num_classes": 3, "test_accuracy": 0.75})
    monkeypatch.setattr(classifier, "classifier_for", lambda *args, **kwargs: clf)
    monkeypatch.setattr(classifier, "outputs", stand_in_outputs)
    class_metrics, references = classes.class_metrics, []

    def recording_class_metrics(predicted, data_labels, num_classes):
        references.append(np.array(data_labels))
        return class_metrics(predicted, data_labels, num_classes)

    monkeypatch.setattr(classes, "class_metrics", recording_class_metrics)
    drawn_for = np.arange(20) * 3 // 20  # Experiment.sample_labels(20) of a 3-class model
    exp = SimpleNamespace(
        config=base_config(),
        kind=KINDS["image"],
        test_metrics=lambda *args, **kwargs: {},
        num_classes=3 if conditional else 0,
        sample_labels=lambda num, label=None: drawn_for[:num] if conditional else None,
    )
    out = evaluate_lib.evaluate(exp, None, train, test, num_samples=20, max_test=6, seed=3)

    assert len(references) == 2
    for labels in references:
        np.testing.assert_array_equal(labels, test_labels)
    fake = sampling.to_uint8(fake01)
    real = test.to_arrays()["image"][:6]
    floor = train.take(np.sort(np.random.default_rng(3).choice(40, 20, replace=False)))["image"]
    (f_fake, c_fake), (f_real, c_real), (f_floor, c_floor) = map(
        stand_in_outputs, (None,) * 3, (fake, real, floor)
    )
    expected = {"classifier_test_accuracy": 0.75}
    expected |= features.feature_metrics(f_real, f_fake, "classifier", seed=3)
    best = features.feature_metrics(f_real, f_floor, "classifier", seed=3)
    expected |= {f"{name}_floor": value for name, value in best.items()}
    expected |= class_metrics(c_fake, test_labels, 3)
    expected |= {f"{k}_floor": v for k, v in class_metrics(c_floor, test_labels, 3).items()}
    if conditional:
        expected["class_accuracy"] = np.mean(c_fake == drawn_for)
        expected["class_accuracy_floor"] = np.mean(c_real == test_labels[:6])
        assert 0 < expected["class_accuracy"] < 1 and expected["class_accuracy_floor"] < 1
    assert set(out) == set(expected) and len(out) == 17 + 2 * conditional
    assert out == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert out["precision_classifier"] != out["recall_classifier"]  # not symmetric


def test_each_evaluation_appends_a_row_with_its_flags(ring_workdir, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(ring_workdir, workdir, ignore=shutil.ignore_patterns("eval.jsonl"))
    first, _ = evaluate(workdir, "--num_samples", "100", "--seed", "3")
    second, _ = evaluate(workdir, "--num_samples", "120", "--seed", "4", "--max_test", "0")
    assert eval_rows(workdir) == [first, second]  # appended, not overwritten
    assert first["settings"] == {
        "num_samples": 100,
        "nll_k": 5000,  # config.eval.nll_k's default (unused by a GAN, but recorded)
        "max_test": 0,
        "seed": 3,
        "test_data": "ring8 (test split)",
    }
    assert second["settings"]["seed"] == 4 and second["settings"]["max_test"] == 0  # 0 = all


def test_a_nan_metric_is_written_as_json_null(ring_workdir, tmp_path, monkeypatch):
    """reverse_kl is NaN when no sample is high quality: eval.jsonl stays strict JSON."""
    from genjax.experiment import load_config
    from genjax.metrics import evaluate as evaluate_lib

    workdir = tmp_path / "run"
    shutil.copytree(ring_workdir, workdir, ignore=shutil.ignore_patterns("eval.jsonl"))
    nan_metrics = {"modes": 0.0, "hq_fraction": 0.0, "reverse_kl": float("nan")}
    monkeypatch.setattr(evaluate_lib, "evaluate", lambda *args, **kwargs: nan_metrics)
    evaluate_lib.evaluate_workdir(
        workdir, load_config(workdir), num_samples=10, nll_k=1, max_test=0, seed=0,
        inception_weights="",
    )  # fmt: skip

    def refuse(name):
        raise AssertionError(f"{name} in eval.jsonl")

    (line,) = (workdir / "eval.jsonl").read_text().splitlines()
    row = json.loads(line, parse_constant=refuse)
    assert row["reverse_kl"] is None and row["modes"] == 0.0
