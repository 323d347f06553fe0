"""benchmarks/throughput.py keeps the JSON contract README's speed tables are made from.

One quick run of the smallest config, train.py's loop included; speed itself is never
asserted, only the keys and that the derived columns follow from the measured ones. Then
what several devices change (2 simulated CPU devices, in subprocesses), the FLOP count of a
loop against a closed form, and that rows reach the files as they are measured.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_cli

KEYS = (  # the keys, then bytes, steps_per_call's gain and the loop's
    "config",
    "batch",
    "dtype",
    "steps_per_call",
    "compile_s",
    "step_ms",
    "examples_per_s",
    "flops_per_step",
    "flops_per_s",
    "peak_flops_per_s",
    "mfu",
    "bytes_per_step",
    "one_step_ms",
    "steps_per_call_gain",
    "loop_steps_per_s",
    "loop_fraction",
    "loop_fraction_mean",
    "unsettled_slowdown",
    "torch_unsettled_slowdown",
)
TWO_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


@pytest.fixture(scope="module")
def one_device_run(tmp_path_factory):
    """(the row, the markdown table) of a quick gan_ring8 run with train.py's loop and the
    PyTorch reference."""
    tmp_path = tmp_path_factory.mktemp("throughput")
    out = tmp_path / "rows.json"
    table = tmp_path / "table.md"
    r = run_cli(
        "benchmarks/throughput.py",
        "--config=gan_ring8",
        "--quick",
        "--loop",
        "--torch",
        f"--json={out}",
        f"--markdown={table}",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (row,) = json.loads(out.read_text())
    return row, table.read_text()


@pytest.mark.xdist_group("one_device_run")
def test_throughput_json_and_table(one_device_run):
    row, table = one_device_run
    assert set(KEYS) <= set(row), set(KEYS) - set(row)
    assert (row["config"], row["batch"], row["dtype"]) == ("gan_ring8", 256, "float32")
    assert (row["devices"], row["matmul_precision"]) == (1, "ieee")
    assert row["steps_per_call"] == 50
    for key in KEYS[4:]:  # all but config, batch, dtype and steps_per_call are numbers
        assert math.isfinite(row[key]) and row[key] > 0, (key, row[key])
    step_s = row["step_ms"] / 1e3
    assert math.isclose(row["examples_per_s"], row["batch"] / step_s, rel_tol=1e-9)
    assert math.isclose(row["flops_per_s"], row["flops_per_step"] / step_s, rel_tol=1e-9)
    assert math.isclose(row["mfu"], row["flops_per_s"] / row["peak_flops_per_s"], rel_tol=1e-9)
    gain = row["one_step_ms"] / row["step_ms"]
    assert math.isclose(row["steps_per_call_gain"], gain, rel_tol=1e-9)
    assert row["loop_fractions"] == [row["loop_fraction"]]  # --quick: one loop run
    # per step (about 0.4 GFLOP), not per 50-step call (about 2e10)
    assert 1e8 < row["flops_per_step"] < 1e10
    lines = table.splitlines()
    assert lines[0].startswith("| config |") and "GB/step" in lines[0]
    assert lines[2].startswith("| gan_ring8 | 2 | 256 | float32 | 50 |")
    torch_step_s = row["batch"] / row["torch_examples_per_s"]
    assert math.isclose(row["speedup_vs_torch"], torch_step_s / step_s, rel_tol=1e-9)
    torch_flops_per_s = row["torch_flops_per_step"] / torch_step_s
    assert math.isclose(row["torch_mfu"], torch_flops_per_s / row["peak_flops_per_s"])
    # torch's own count of the same step: its matmuls only, so a little below XLA's
    assert 0.8 * row["flops_per_step"] < row["torch_flops_per_step"] <= row["flops_per_step"]
    assert "| torch ex/s | torch MFU | vs torch |" in lines[0]
    assert isinstance(row["processor"], str)
    (machine,) = [line for line in lines if line.startswith("cpu x1, host ")]
    assert f"({row['processor'] or 'model unknown'})" in machine
    assert "float32 matmuls and convolutions: IEEE float32" in lines
    assert "n/a" not in table  # on CPU, without loops, every count is made


def test_the_call_that_counts_is_the_second_of_two_back_to_back(monkeypatch):
    """settled times two calls in a row and returns both, the first (after another kind of
    call) apart from the second (after its own kind), which is the one the table uses."""
    from benchmarks import throughput

    clock = iter([0.0, 5.0, 5.0, 6.0])  # the first call takes 5 s, the second 1 s
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: next(clock))
    calls = []
    assert throughput.settled(lambda: calls.append(1)) == (5.0, 1.0)
    assert len(calls) == 2


def test_each_loop_run_is_set_against_the_calls_on_either_side(monkeypatch):
    """--loop_runs 2: loop, calls, loop, calls; run r against the calls before and after it."""
    from benchmarks import throughput

    rates = iter([(100.0, 90.0), (50.0, 40.0)])  # (median, mean) steps/s of the two runs
    monkeypatch.setattr(throughput, "loop_rate", lambda *_: next(rates))
    seconds = iter([0.02, 0.02, 0.04, 0.04])  # two blocks of two calls after the runs
    monkeypatch.setattr(throughput, "timed", lambda call: next(seconds))
    args = throughput.parse_args(["--calls=2", "--loop_runs=2"])
    config = throughput.load_config("gan_ring8", args)
    config.steps_per_call = 2
    out = throughput.loop_fractions(args, config, None, lambda: None, before=[0.02, 0.02])
    # run 1: 100 steps/s against 0.01 s per step; run 2: 50 against the median of 0.01 and 0.02
    assert out["loop_fractions"] == pytest.approx([1.0, 50 * 0.015])
    assert out["loop_fraction"] == pytest.approx((1.0 + 0.75) / 2)
    assert out["loop_fraction_mean"] == pytest.approx((0.9 + 40 * 0.015) / 2)
    assert out["loop_steps_per_s"] == 75.0


def test_bad_loop_runs_is_refused():
    r = run_cli("benchmarks/throughput.py", "--config=gan_ring8", "--loop", "--loop_runs=0")
    assert r.returncode == 2
    assert "--loop_runs=0; valid: 1 or more" in r.stderr.strip().splitlines()[-1]


def test_torch_refused_on_several_devices():
    """genjax would use both devices and torch one: a one-line error, exit 2, before work."""
    r = run_cli(
        "benchmarks/throughput.py", "--config=gan_ring8", "--quick", "--torch", env=TWO_DEVICES
    )
    assert r.returncode == 2, r.stderr[-2000:]
    (line,) = r.stderr.strip().splitlines()
    assert "CUDA_VISIBLE_DEVICES=0" in line, line


@pytest.mark.xdist_group("one_device_run")
def test_counts_are_global_on_several_devices(one_device_run, tmp_path):
    """FLOPs, bytes and the peak cover both devices, as examples/s does: the FLOPs of a step
    split over 2 devices match one device's (plus the duplicated optimiser update)."""
    one, _ = one_device_run
    out, table = tmp_path / "rows.json", tmp_path / "table.md"
    r = run_cli(
        "benchmarks/throughput.py",
        "--config=gan_ring8",
        "--quick",
        f"--json={out}",
        f"--markdown={table}",
        env=TWO_DEVICES,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (two,) = json.loads(out.read_text())
    assert two["devices"] == 2
    assert math.isclose(two["flops_per_step"], one["flops_per_step"], rel_tol=0.02)
    # each device reads the replicated parameters and optimiser state: more, not twice as many
    assert one["bytes_per_step"] < two["bytes_per_step"] < 2 * one["bytes_per_step"]
    assert math.isclose(two["mfu"], two["flops_per_s"] / two["peak_flops_per_s"], rel_tol=1e-9)
    assert "GFLOP/step, GB/step, GFLOP/s and MFU: all 2 devices" in table.read_text()


def test_step_flops_counts_every_scan_iteration():
    """XLA counts a loop body once; step_flops unrolls scans: 5 matmuls of 2 * 8 * 16 * 16."""
    from benchmarks import throughput

    def five_matmuls(x, w):
        return jax.lax.scan(lambda c, _: (c @ w, None), x, None, length=5)[0]

    fn, x, w = jax.jit(five_matmuls), jnp.ones((8, 16)), jnp.ones((16, 16))
    assert throughput.step_flops(fn, x, w) == (5 * 2 * 8 * 16 * 16, 1)
    compiled = throughput._first(fn.lower(x, w).compile().cost_analysis())["flops"]
    assert compiled < 2 * 2 * 8 * 16 * 16  # what it would report: the body once


def test_rows_are_written_as_measured(tmp_path, monkeypatch):
    """A run cut short (gpu.sh's timeout, here an error in the second config) keeps the rows
    it measured in --json and --markdown."""
    from benchmarks import throughput

    def measure(name, args, data_shape):
        if name == "gan_grid25":
            raise RuntimeError("cut short")
        return {"config": name, "batch": 256, "flops_per_step": None}

    monkeypatch.setattr(throughput, "measure", measure)
    out, table = tmp_path / "rows.json", tmp_path / "table.md"
    argv = ["--config=gan_ring8,gan_grid25", f"--json={out}", f"--markdown={table}"]
    with pytest.raises(RuntimeError, match="cut short"):
        throughput.main(argv)
    assert json.loads(out.read_text()) == [
        {"config": "gan_ring8", "batch": 256, "flops_per_step": None}
    ]
    lines = table.read_text().splitlines()
    assert lines[0] == "| config | batch | GFLOP/step |"
    assert lines[2] == "| gan_ring8 | 256 | n/a |"  # a count XLA could not make


def test_all_expands_in_place_among_named_configs(monkeypatch):
    from benchmarks import throughput

    measured = []
    monkeypatch.setattr(throughput, "measure", lambda name, *_: measured.append(name) or {})
    throughput.main(["--config=gan_ring8,all,sngan_cifar10"])
    assert measured == ["gan_ring8", *throughput.ALL, "sngan_cifar10"]
    assert "sngan_cifar10" not in throughput.ALL


def _benchmarked_configs():
    from benchmarks import throughput

    return throughput.ALL


@pytest.mark.parametrize("name", _benchmarked_configs())
def test_the_torch_reference_trains_networks_of_genjax_shapes(name):
    """Each of the two networks PyTorch times holds parameter tensors of the same sizes as
    genjax's (BatchNorm's running statistics and spectral norm's power-iteration vectors
    aside, state in both), so the ratio compares like with like. Init is traced, not run."""
    pytest.importorskip("torch")
    from benchmarks import throughput, torch_reference

    config = throughput.load_config(name, throughput.parse_args([]))
    if config.model.name not in torch_reference.MODELS:  # its row has no torch columns
        pytest.skip(f"no PyTorch reference for model {config.model.name!r}")
    experiment = throughput.trainer_for(config, throughput.data_shape_for(name, None)).experiment
    state = jax.eval_shape(experiment.init_state, jax.random.PRNGKey(0))
    ours = experiment.family.network_params(state)
    theirs = torch_reference.networks(config, experiment.data_shape, experiment.num_classes)
    for tree, net in zip(ours, theirs, strict=True):
        sizes = sorted(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))
        assert sizes == sorted(p.numel() for p in net.parameters()), net


def test_configs_whose_data_needs_a_download_run_on_random_data_of_its_shape():
    """sngan_cifar10 and dcgan_celeba64 (named; not in the CPU `all`) run on random data
    without opening their TFDS data; a class-conditional model's random data is labelled.
    Nothing is compiled."""
    from benchmarks import throughput

    assert "cdcgan_mnist" in throughput.ALL
    assert "sngan_cifar10" not in throughput.ALL and "dcgan_celeba64" not in throughput.ALL
    args = throughput.parse_args([])
    for name, shape in (("sngan_cifar10", (32, 32, 3)), ("dcgan_celeba64", (64, 64, 3))):
        config = throughput.load_config(name, args)
        trainer = throughput.trainer_for(config, throughput.data_shape_for(name, None))
        assert trainer.train_source.shape == shape and not trainer.train_source.num_classes
        assert trainer.experiment.data_shape == shape and trainer.experiment.num_classes == 0
        assert trainer.config.data.on_device == config.data.on_device
    config = throughput.load_config("cdcgan_mnist", args)
    trainer = throughput.trainer_for(config, (32, 32, 3))
    labels = trainer.train_source.to_arrays()["label"]
    assert trainer.experiment.num_classes == throughput.RANDOM_CLASSES == 10
    assert labels.shape == (throughput.RANDOM_EXAMPLES,) and set(labels) == set(range(10))
    assert throughput.data_shape_for("dcgan_mnist", None) is None  # its own data


def token_rows(n: int, max_len: int, vocab_size: int) -> np.ndarray:
    """`n` int32 rows as genjax.data.text makes them: 0 to max_len - 1 words, <eos>, <pad>."""
    from genjax.data.text import EOS_ID, PAD_ID, SPECIALS

    rng = np.random.default_rng(0)
    words = rng.integers(len(SPECIALS), vocab_size, (n, max_len))
    ends = rng.integers(0, max_len, (n, 1))  # each row's <eos> position
    position = np.arange(max_len)
    return np.where(position < ends, words, np.where(position == ends, EOS_ID, PAD_ID)).astype(
        np.int32
    )


@pytest.mark.parametrize("name", ["cdcgan_mnist", "sngan_cifar10", "cvae_mnist", "text_vae"])
def test_one_torch_step_trains_every_parameter(name):
    """One step of the PyTorch reference at a tiny width and batch changes every parameter
    tensor of both networks; the spectrally normalised layers' power iterations ran; the
    conditional discriminator's logits and the conditional VAE's encoder and decoder depend
    on the labels. The sequence VAE trains on token rows made here, not on pydocs."""
    torch = pytest.importorskip("torch")
    from benchmarks import throughput, torch_reference

    torch.manual_seed(0)  # the same initial networks whatever ran before in this process
    args = throughput.parse_args(["--batch=4", "--steps_per_call=1"])
    config = throughput.load_config(name, args)
    if name == "text_vae":
        config.model.update(hidden=8, embed_dim=4, z_dim=2)
        config.data.vocab_size, config.data.max_len = 12, 6
        arrays, num_classes = {"tokens": token_rows(64, 6, 12)}, 0
    else:
        if name == "cvae_mnist":
            config.model.hidden, config.model.z_dim = 8, 2
        else:
            config.model.features = 8
        if name == "sngan_cifar10":
            config.model.d_features = 8
        shape = {"sngan_cifar10": (32, 32, 3)}.get(name, (28, 28, 1))
        trainer = throughput.trainer_for(config, shape)  # random data, labelled if conditional
        num_classes = trainer.experiment.num_classes
        arrays = trainer.train_source.to_arrays()
    threads = torch.get_num_threads()  # make_call sets them for the whole process
    call = torch_reference.make_call(config, arrays, 1, threads=1, num_classes=num_classes)
    torch.set_num_threads(threads)
    assert len(call.networks) == 2
    params = [p for net in call.networks for p in net.parameters()]
    us = [b for net in call.networks for n, b in net.named_buffers() if n.endswith("._u")]
    assert len(us) == (11 if name == "sngan_cifar10" else 0)  # one per D layer, as genjax's
    us = [u for u in us if u.numel() > 1]  # a unit vector of size 1 (the last layer's) stays
    before = [t.detach().clone() for t in params + us]
    call()
    assert all(not torch.equal(a, b) for a, b in zip(before, params + us, strict=True))
    assert num_classes == (10 if name in ("cdcgan_mnist", "cvae_mnist") else 0)
    x = torch.zeros(2, 1, 28, 28)
    if name == "cdcgan_mnist":
        discriminator = call.networks[1].eval()
        with torch.no_grad():
            logits = discriminator(x, torch.tensor([0, 0])), discriminator(x, torch.tensor([0, 1]))
        assert logits[0][0] == logits[1][0] and logits[0][1] != logits[1][1]
    if name == "cvae_mnist":  # two inputs alike but for their labels
        encoder, decoder = (net.eval() for net in call.networks)
        with torch.no_grad():
            mean, _ = encoder(x, torch.tensor([0, 1]))
            out = decoder(torch.zeros(2, 2), torch.tensor([0, 1]))
        assert not torch.equal(mean[0], mean[1]) and not torch.equal(out[0], out[1])


def test_the_torch_kl_weight_is_genjaxs():
    """torch_reference.kl_weight, computed on the host, follows genjax.objectives.kl_weight
    through warm-up and cyclical annealing."""
    pytest.importorskip("torch")
    from types import SimpleNamespace

    from benchmarks import torch_reference
    from genjax import objectives

    for cycles, warmup in ((4, 0), (0, 300), (0, 0)):
        v = SimpleNamespace(beta=0.5, kl_cycles=cycles, kl_warmup_steps=warmup)
        for step in (0, 1, 149, 150, 374, 375, 599, 1000, 2999):
            ours = objectives.kl_weight(
                step, beta=0.5, warmup_steps=warmup, cycles=cycles, num_steps=3000
            )
            theirs = torch_reference.kl_weight(v, step, 3000)
            assert math.isclose(float(ours), theirs, rel_tol=1e-6, abs_tol=1e-7), (v, step)


def test_model_stats_counts_each_networks_parameters():
    # gan_ring8's 2 x 256 MLPs by hand: G 2 -> 256 -> 256 -> 2, D 2 -> 256 -> 256 -> 1.
    from benchmarks import model_stats, throughput

    config = throughput.load_config("gan_ring8", throughput.parse_args(["--config", "gan_ring8"]))
    g = (2 * 256 + 256) + (256 * 256 + 256) + (256 * 2 + 2)
    d = (2 * 256 + 256) + (256 * 256 + 256) + (256 + 1)
    assert model_stats.parameter_counts(config, None) == ("toy_mlp", [g, d])


def test_augment_draws_the_scarce_labels_from_the_training_split_only(tmp_path):
    """benchmarks/augment.py's labelled set: exactly per_class digits of each class, all
    from mnist5k's training split, none repeated; the whole test split rides along."""
    from benchmarks import augment
    from genjax.data.embedded import mnist5k_splits

    path = augment.scarce_labels(1, 3, tmp_path / "real.npz")
    with np.load(path) as f:
        images, labels, test_images = f["images"], f["labels"], f["test_images"]
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.full(10, 3))
    splits = mnist5k_splits()
    train = splits.select("train").to_arrays()["image"].reshape(-1, 784)
    test = splits.select("test").to_arrays()["image"]
    np.testing.assert_array_equal(test_images, test)
    rows = {row.tobytes(): i for i, row in enumerate(train)}
    found = [rows.get(image.tobytes()) for image in images.reshape(-1, 784)]
    assert None not in found and len(set(found)) == 30


def test_a_variant_is_its_config_with_each_override_read_as_the_fields_type():
    """quality.py's and throughput.py's CONFIG+KEY=VALUE names (values typed by the field)."""
    from benchmarks.quality import config_names, variant_config

    config = variant_config("vae_mlp_mnist+vae.objective=iwae+vae.num_samples=5+optim.lr=3e-4")
    assert (config.vae.objective, config.vae.num_samples, config.optim.lr) == ("iwae", 5, 3e-4)
    assert isinstance(config.vae.num_samples, int) and config.model.name == "vae_mlp"
    names = config_names("cdcgan_mnist+gan.augment=color,cutout,vae_mlp_mnist")
    assert names == ["cdcgan_mnist+gan.augment=color,cutout", "vae_mlp_mnist"]


def test_a_run_scored_again_with_another_nll_k_keeps_its_training_time(tmp_path, monkeypatch):
    """quality.py restores a trained run to score it with a new --nll_k: the new row has the
    new settings and scores but the train_seconds of the training, not of the restore."""
    import types

    import genjax.metrics.evaluate
    import genjax.train
    from benchmarks import quality

    class Trainer:  # a run that is already trained: run() restores it
        def __init__(self, config, workdir):
            self.experiment = self.train_source = self.test_source = None
            self.steps = config.num_steps

        def run(self):
            return types.SimpleNamespace(step=self.steps)

    def evaluate(*args, nll_k, **kwargs):
        return {"test_nll": 100.0 - nll_k}

    monkeypatch.setattr(genjax.train, "Trainer", Trainer)
    monkeypatch.setattr(genjax.metrics.evaluate, "evaluate", evaluate)
    workdir = tmp_path / "gan_ring8" / "seed0"
    workdir.mkdir(parents=True)
    settings = {"num_steps": 10000, "nll_k": 5}
    old = {"test_nll": 95.0, "train_seconds": 123.0, "settings": settings}
    (workdir / "quality.json").write_text(json.dumps(old))
    assert quality.run_one("gan_ring8", 0, tmp_path, 0, 5) == old  # cached: not scored again
    row = quality.run_one("gan_ring8", 0, tmp_path, 0, 7)
    assert row == {"test_nll": 93.0, "train_seconds": 123.0, "settings": settings | {"nll_k": 7}}
    assert json.loads((workdir / "quality.json").read_text()) == row


def test_seed_in_a_variant_value_is_each_runs_seed(tmp_path, monkeypatch):
    """`{seed}` in a quality.py variant becomes the run's seed in its config (a second stage
    trained on the first stage of its own seed), and the run keeps the name's folder."""
    import types

    import genjax.metrics.evaluate
    import genjax.train
    from benchmarks import quality

    seen = {}

    class Trainer:
        def __init__(self, config, workdir):
            seen[config.seed] = (config.data.train, workdir)
            workdir.mkdir(parents=True)
            self.experiment = self.train_source = self.test_source = None
            self.steps = config.num_steps

        def run(self):
            return types.SimpleNamespace(step=self.steps)

    monkeypatch.setattr(genjax.train, "Trainer", Trainer)
    monkeypatch.setattr(genjax.metrics.evaluate, "evaluate", lambda *a, **k: {"modes": 8.0})
    name = "gan_ring8+data.train=npz:first/seed{seed}.npz"
    for seed in (1, 2):
        quality.run_one(name, seed, tmp_path, 0, 5)
        assert seen[seed] == (f"npz:first/seed{seed}.npz", tmp_path / name / f"seed{seed}")
