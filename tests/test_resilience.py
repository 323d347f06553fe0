"""Jobs that get preempted, killed, diverge, lose a checkpoint, or run as several processes."""

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, run_cli

from genjax import checkpoint
from genjax.config import ConfigError
from genjax.experiment import restore
from genjax.logs import MetricWriter

RING = ("train.py", "--config", "configs/gan_ring8.py")


def checkpoint_steps(workdir):
    return sorted(int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit())


def final_leaves(workdir):
    return [np.asarray(x) for x in jax.tree.leaves(restore(workdir).state)]


def assert_same_leaves(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def ring20(tmp_path_factory):
    """A ring8 GAN workdir checkpointed at step 20."""
    workdir = tmp_path_factory.mktemp("ring20") / "run"
    r = run_cli(
        *RING,
        "--workdir",
        workdir,
        "--config.num_steps=20",
        "--config.steps_per_call=10",
        "--config.checkpoint_every=20",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return workdir


def truncate_biggest_file(checkpoint):
    """Damages a checkpoint folder: its largest file cut to half its length."""
    files = sorted(p for p in checkpoint.rglob("*") if p.is_file())
    biggest = max(files, key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])


def copy_of(workdir, tmp_path):
    import shutil

    target = tmp_path / "run"
    shutil.copytree(workdir, target)
    return target


def test_nonfinite_stop_exits_3_and_keeps_the_last_good_checkpoint(ring20, tmp_path):
    workdir = copy_of(ring20, tmp_path)
    r = run_cli(
        *RING,
        "--workdir",
        workdir,
        "--config.num_steps=40",
        "--config.steps_per_call=10",
        "--config.checkpoint_every=10",
        "--config.optim.lr=1e30",
    )
    assert r.returncode == 3, r.stderr[-2000:]
    error = r.stderr.strip().splitlines()[-1]
    assert error.startswith("error: non-finite") and "step 21" in error and "nan" in error.lower()
    assert checkpoint_steps(workdir) == [20]


def _not_json(constant):
    raise AssertionError(f"{constant} is not strict JSON")


def test_nonfinite_skip_drops_the_updates_and_counts_them(ring20, tmp_path):
    workdir = copy_of(ring20, tmp_path)
    r = run_cli(
        *RING,
        "--workdir",
        workdir,
        "--config.num_steps=40",
        "--config.steps_per_call=10",
        "--config.log_every=10",
        "--config.optim.lr=1e30",
        "--config.nonfinite=skip",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line, parse_constant=_not_json) for line in open(workdir / "metrics.jsonl")]
    assert [row["g_loss"] for row in rows if row["step"] > 20] == [None, None]  # NaN as null
    skipped = [row["skipped_updates"] for row in rows if row["step"] > 20]
    # The first critic update at lr 1e30 is finite; from then on the losses are not, and each
    # step skips its critic update and its generator update (n_critic + 1 = 2 per step).
    assert skipped == [19, 39], skipped
    after = restore(workdir)
    assert after.step == 40
    for x in jax.tree.leaves(after.state):
        assert np.all(np.isfinite(np.asarray(x, np.float64))), "a skipped update reached the state"


def test_sigterm_saves_at_the_current_step_and_exits_0(tmp_path):
    workdir = tmp_path / "run"
    cmd = [
        sys.executable,
        *RING,
        "--workdir",
        str(workdir),
        "--config.num_steps=1000000",
        "--config.checkpoint_every=0",
        "--config.sample_every=0",
        "--config.log_every=50",
    ]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    metrics = workdir / "metrics.jsonl"
    while time.time() < deadline and not (metrics.exists() and metrics.read_text()):
        time.sleep(0.1)  # compiled and training
    assert metrics.exists() and metrics.read_text(), "training did not start within 120 s"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)  # a million steps would take hours
    assert proc.returncode == 0, stderr[-2000:]
    steps = checkpoint_steps(workdir)
    assert len(steps) == 1 and 0 < steps[0] < 1_000_000
    assert f"saved a checkpoint at step {steps[0]}" in stderr
    r = run_cli(
        *RING,
        "--workdir",
        workdir,
        f"--config.num_steps={steps[0] + 50}",
        "--config.sample_every=0",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resumed from step {steps[0]}" in r.stderr
    assert restore(workdir).step == steps[0] + 50


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path):
    args = (
        "--config.num_steps=40",
        "--config.steps_per_call=10",
        "--config.checkpoint_every=20",
        "--config.sample_every=0",
    )
    damaged, straight = tmp_path / "damaged", tmp_path / "straight"
    assert run_cli(*RING, "--workdir", damaged, *args).returncode == 0
    truncate_biggest_file(damaged / "checkpoints" / "40")
    r = run_cli(*RING, "--workdir", damaged, *args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "checkpoint at step 40 does not restore" in r.stderr
    assert "Traceback" not in r.stderr, r.stderr[-2000:]  # warning lines only, no noise
    assert (damaged / "checkpoints" / "40.damaged").is_dir()  # kept, not deleted
    assert checkpoint_steps(damaged) == [20, 40]
    assert run_cli(*RING, "--workdir", straight, *args).returncode == 0
    assert_same_leaves(final_leaves(damaged), final_leaves(straight))


def test_readers_skip_a_damaged_checkpoint_and_rename_nothing(ring20, tmp_path):
    """restore() (sample.py, evaluate) falls back past a damaged newest step and renames
    nothing (only training sets damaged steps aside); a step set aside twice gets a new name."""
    import shutil

    folder = copy_of(ring20, tmp_path) / "checkpoints"
    shutil.copytree(folder / "20", folder / "30")  # a second step, then damaged
    truncate_biggest_file(folder / "30")
    before = sorted(p.name for p in folder.iterdir())
    assert restore(folder.parent).step == 20
    assert f"{folder / '30'}{os.sep}" in checkpoint._FAILED_RESTORES  # its late reports dropped
    assert sorted(p.name for p in folder.iterdir()) == before
    (folder / "30.damaged").mkdir()  # set aside by an earlier run
    checkpoints = checkpoint.Checkpoints(folder)
    assert checkpoints._set_aside(30) == folder / "30.damaged1"
    checkpoints.close()
    assert checkpoint_steps(folder.parent) == [20]


def test_no_checkpoint_is_set_aside_when_none_restores(ring20, tmp_path):
    """A template that none of the checkpoints fits (another model) renames nothing."""
    workdir = copy_of(ring20, tmp_path)
    before = sorted(p.name for p in (workdir / "checkpoints").iterdir())
    run = restore(workdir)
    template = run.experiment.new_train_state(run.state)
    other_model = jax.tree.map(lambda x: jnp.zeros((3, *x.shape), x.dtype), template)
    checkpoints = checkpoint.Checkpoints(workdir / "checkpoints")
    with pytest.raises(ValueError, match="not compatible"):
        checkpoints.restore_latest(other_model, set_aside=True)
    checkpoints.close()
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == before


def test_sigkill_at_arbitrary_points_then_resume_is_bitwise_exact(tmp_path):
    """Killed several times (during steps, writes of checkpoints and logs), the rerun
    ends bitwise equal to an uninterrupted run; the host pipeline's position is restored."""
    args = [
        "train.py",
        "--config",
        "configs/vae_mlp_mnist.py",
        "--config.num_steps=100",
        "--config.steps_per_call=5",
        "--config.checkpoint_every=5",
        "--config.log_every=5",
        "--config.sample_every=0",
        "--config.data.on_device=False",
    ]
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    rng = random.Random(0)
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, *args, "--workdir", str(killed)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 120
        start = len(checkpoint_steps(killed)) if (killed / "checkpoints").exists() else 0
        while time.time() < deadline and proc.poll() is None:
            if (killed / "checkpoints").exists() and len(checkpoint_steps(killed)) > start:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2
    r = run_cli(*args, "--workdir", killed)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed from step" in r.stderr  # restored, not retrained from 0
    assert run_cli(*args, "--workdir", straight).returncode == 0
    assert_same_leaves(final_leaves(killed), final_leaves(straight))
    steps = [json.loads(line)["step"] for line in open(killed / "metrics.jsonl")]
    assert steps == list(range(5, 101, 5))  # rows past the resumed checkpoint were replaced


def test_only_the_reports_of_reads_a_failed_restore_left_behind_are_dropped(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    asyncio_log = logging.getLogger("asyncio")
    monkeypatch.setattr(asyncio_log, "filters", [])
    checkpoint._silence_abandoned_reads()
    checkpoint._silence_abandoned_reads()  # installs once
    read = types.SimpleNamespace(__qualname__="_read_array_index_and_device_put")
    other = types.SimpleNamespace(exc_value=ValueError("a real one"), object=None)
    for report in [
        types.SimpleNamespace(exc_value=RuntimeError("Event loop is closed"), object=None),
        types.SimpleNamespace(exc_value=Exception("array index: (0,)"), object=read),
        other,
    ]:
        sys.unraisablehook(report)
    assert seen == [other]

    def record(msg):
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, None, None)

    never_retrieved = "Task exception was never retrieved\nfuture: <Task coro=<_read_array_index"
    assert not asyncio_log.filter(record(never_retrieved + "_and_device_put() done>"))
    assert asyncio_log.filter(record("Task exception was never retrieved\nfuture: <Task ...>"))
    opening = "Task exception was never retrieved\nfuture: <Task finished coro=<async_deserialize"
    assert not asyncio_log.filter(record(opening + "() done, defined at serialization.py:394>"))
    # tensorstore's futures carry no Python frames: known by the failed step's folder
    monkeypatch.setattr(checkpoint, "_FAILED_RESTORES", {"/w/checkpoints/2/"})
    opened = "Future exception was never retrieved\nfuture: <Future finished exception=ValueError("
    text = 'OUT_OF_RANGE: Error reading "w4/.zarray" at local file "/w/checkpoints/{}/state/"'
    assert not asyncio_log.filter(record(opened + text.format(2) + ")>"))
    assert asyncio_log.filter(record(opened + text.format(3) + ")>"))
    reread = types.SimpleNamespace(exc_value=ValueError(text.format(2)), object=None)
    sys.unraisablehook(reread)
    assert seen == [other]

    def _read_array_index_and_device_put():  # raises as orbax's read does
        raise Exception("Encountered error while reading array index")

    try:
        _read_array_index_and_device_put()
    except Exception as e:  # noqa: BLE001
        future = record("Future exception was never retrieved\nfuture: <Future finished>")
        future.exc_info = (type(e), e, e.__traceback__)
        assert not asyncio_log.filter(future)


def test_a_failed_restores_reads_that_never_started_do_not_warn(monkeypatch):
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: None)  # so that it installs
    monkeypatch.setattr(logging.getLogger("asyncio"), "filters", [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checkpoint._silence_abandoned_reads()
        for name in ("_read_array_index_and_device_put", "async_deserialize", "another"):
            warnings.warn(f"coroutine '{name}' was never awaited", RuntimeWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["coroutine 'another' was never awaited"]


def test_only_orbaxs_reports_of_a_save_the_file_system_failed_are_dropped(monkeypatch):
    absl_log = logging.getLogger("absl")
    monkeypatch.setattr(absl_log, "filters", [])
    checkpoint._silence_failed_writes()
    checkpoint._silence_failed_writes()  # installs once
    assert len(absl_log.filters) == 1
    orbax_file = os.path.join(os.path.dirname(checkpoint.ocp.__file__), "_src", "future.py")

    def record(pathname, msg, error=None):
        exc_info = (type(error), error, None) if error else None
        return logging.LogRecord("absl", logging.ERROR, pathname, 1, msg, None, exc_info)

    full = OSError(28, "No space left on device")
    wrapped = ValueError("commit failed")
    wrapped.__context__ = full
    tensorstore = ValueError("RESOURCE_EXHAUSTED: Failed writing [os_error_code='28']")
    for dropped in [
        record(orbax_file, "thread raised an exception", full),
        record(orbax_file, "Failed to run 4 Handler Commit operations", wrapped),
        record(orbax_file, "raised an exception", tensorstore),
        record(orbax_file, "Failed to write metadata: [Errno 28] No space left on device"),
    ]:
        assert not absl_log.filter(dropped)
    for kept in [
        record(orbax_file, "Failed to restore", ValueError("a real one")),
        record(orbax_file, "checkpoint saved"),
        record(__file__, "an OSError outside orbax", full),
    ]:
        assert absl_log.filter(kept)


def test_resume_drops_the_log_rows_past_the_checkpoint_but_not_the_evaluate_clis(tmp_path):
    def write(name, rows):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"st')

    write("metrics.jsonl", [{"step": s, "loss": 1.0} for s in (100, 200, 300)])
    cli_row = {"step": 300, "fid": 2.0, "settings": {"num_samples": 10}}
    write("eval.jsonl", [{"step": 100, "fid": 3.0}, {"step": 300, "fid": 1.0}, cli_row])
    MetricWriter(tmp_path, resume_step=200).close()

    def read(name):
        return [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]

    assert [r["step"] for r in read("metrics.jsonl")] == [100, 200]
    assert read("eval.jsonl") == [{"step": 100, "fid": 3.0}, cli_row]


def test_the_tensorboard_writer_loads_without_torch():
    """tensorboardX imports torch when it can (seconds per CLI start); genjax hides it, and a
    torch imported afterwards still loads. Without torch installed (CI) both hold trivially."""
    code = (
        "import importlib.util, sys; from genjax import logs; logs._summary_writer_class(); "
        "print('torch' in sys.modules); has_torch = importlib.util.find_spec('torch'); "
        "print(not has_torch or bool(__import__('torch').zeros(1).numel()))"
    )
    r = run_cli("-c", code, env={"PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["False", "True"], r.stdout


def _tensorboard_events(folder):
    """The events of every TensorBoard file in `folder` (TFRecord framing: length, its CRC,
    the Event proto, its CRC)."""
    import struct

    from tensorboardX.proto import event_pb2

    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (length,) = struct.unpack("<Q", data[i : i + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12 : i + 12 + length])
            yield event
            i += 12 + length + 4


def test_resume_purges_tensorboard_after_the_checkpoint_only(tmp_path):
    """TensorBoard drops the events from the purge step on: the steps the resumed run logs
    again (after 200), not step 200 itself, which it does not log again."""
    from tensorboardX.proto import event_pb2

    MetricWriter(tmp_path, resume_step=200).close()
    start = event_pb2.SessionLog.START
    events = _tensorboard_events(tmp_path / "tensorboard")
    assert [e.step for e in events if e.session_log.status == start] == [201]


def test_a_save_at_a_step_that_exists_is_a_no_op_and_keeps_the_first(tmp_path):
    # A step already on disk (e.g. a damaged one another process did not set aside) is not
    # written again: no StepAlreadyExistsError, and the first save's state and data remain.
    checkpoints = checkpoint.Checkpoints(tmp_path / "checkpoints")
    checkpoints.save(5, {"w": jnp.ones(3)}, {"epoch": 1})
    checkpoints.wait()
    checkpoints.save(5, {"w": jnp.zeros(3)}, {"epoch": 2})
    checkpoints.wait()
    assert checkpoints.steps() == [5]
    state, data = checkpoints.restore(5, {"w": jnp.zeros(3)})
    checkpoints.close()
    np.testing.assert_array_equal(state["w"], [1.0, 1.0, 1.0])
    assert data == {"epoch": 1}


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (("", 0, -1), {}, None),  # one process: nothing to join
        (("", 0, -1), {"SLURM_NTASKS": "1"}, None),
        (("", 0, -1), {"TPU_WORKER_HOSTNAMES": "host0"}, None),  # a single-host TPU
        (("", 0, -1), {"SLURM_NTASKS": "4"}, {}),  # detected: jax finds the cluster itself
        (("", 0, -1), {"TPU_WORKER_HOSTNAMES": "host0,host1"}, {}),
        (
            ("10.0.0.1:1234", 2, 0),
            {},
            {"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 0},
        ),
        (("", 2, 1), {}, {"coordinator_address": None, "num_processes": 2, "process_id": 1}),
        (
            ("10.0.0.1:1234", 0, -1),
            {},
            {"coordinator_address": "10.0.0.1:1234", "num_processes": None, "process_id": None},
        ),
    ],
)
def test_initialize_distributed_joins_a_job_only_when_told_or_detected(
    monkeypatch, args, env, expected
):
    from genjax.parallel import initialize_distributed

    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    for name in ("SLURM_NTASKS", "TPU_WORKER_HOSTNAMES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    initialize_distributed(*args)
    # JAX's own heartbeat timeout, 2 x the default peer timeout (30 s) + 30 s: after genjax's
    heartbeat = {"heartbeat_timeout_seconds": 90}
    assert calls == ([] if expected is None else [expected | heartbeat])


def test_metric_rows_are_strict_json_with_nan_and_inf_as_null(tmp_path):
    writer = MetricWriter(tmp_path)
    writer.scalars(3, {"loss": np.float32(np.inf), "kl": np.nan, "recon": -np.inf, "lr": 0.5})
    writer.evaluation(3, {"fid": np.inf, "modes": 7.0})
    writer.close()

    def strict(name):
        raise ValueError(f"{name} is not strict JSON")

    for name in ("metrics.jsonl", "eval.jsonl"):
        rows = [json.loads(line, parse_constant=strict) for line in open(tmp_path / name)]
        assert len(rows) == 1, name
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert rows == [{"step": 3, "loss": None, "kl": None, "recon": None, "lr": 0.5}]
    assert json.loads((tmp_path / "eval.jsonl").read_text()) == {
        "step": 3,
        "fid": None,
        "modes": 7.0,
    }


def test_restore_of_checkpoints_of_another_shape_is_a_user_error(ring20, tmp_path):
    """config.json edited after training (a wider generator): sample.py and evaluate get one
    ConfigError, not the checkpoint library's exception, and the checkpoints stay."""
    workdir = copy_of(ring20, tmp_path)
    config = json.loads((workdir / "config.json").read_text())
    config["model"]["hidden"] *= 2
    (workdir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="no checkpoint restores"):
        restore(workdir)
    assert checkpoint_steps(workdir) == [20]
