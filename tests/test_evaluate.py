"""The evaluate and classifier CLIs end to end, on tiny trained workdirs."""

import json
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
