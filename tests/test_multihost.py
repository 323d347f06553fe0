"""Multi-process jobs that lose a process, or resume on another number of processes.

The processes run on 127.0.0.1 (CPU devices, gloo collectives). One chain of jobs, shared
by the tests of this module (one xdist group, so that it runs once), writes checkpoints with
1 and 2 processes and resumes them on 2, 4 and 1 (RESUMES; both data paths), and trains a
GAN with 1 and with 2; each multi-process job is one tests/multihost_check.py run that
trains all of its workdirs in one jax.distributed job, so that the processes start and
compile once. Which global batches M processes read after a position saved by N is checked
for every N, M in {1, 2, 4} without training (the data pipeline alone).
"""

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import ROOT
from multihost_check import run_jobs

from genjax.checkpoint import newest_complete_step
from genjax.checkpoint import resume_hint as resume_hint
from genjax.config import ConfigError
from genjax.data import host_batches
from genjax.data.arrays import ArraySource
from genjax.experiment import restore
from genjax.parallel import PEER_LOST_EXIT_CODE, PeerWatchdog, initialize_distributed

pytestmark = pytest.mark.xdist_group("multihost")

HALF, FULL = 4, 8  # the first job trains to HALF, the resumed one to FULL
SMALL = {  # and data.train: the tiny images of `tiny_images`
    "model.hidden": 16,
    "model.z_dim": 4,
    "batch_size": 8,  # divides by 1, 2 and 4 processes
    "steps_per_call": 4,
    "log_every": 0,
    "checkpoint_every": 0,  # the last step only
    "sample_every": 0,
    "num_samples": 4,
}
PATHS = {"device": True, "host": False}  # data.on_device
# The run that loses a process: long enough to be killed after its first checkpoint.
PEER = SMALL | {
    "num_steps": 60,
    "steps_per_call": 10,
    "checkpoint_every": 20,
    "log_every": 20,
    "data.on_device": True,
}
PEER_TIMEOUT = 5
# A GAN (two critic updates per step) trained uninterrupted by 1 and by 2 processes.
GAN = {
    "model.hidden": 32,
    "gan.n_critic": 2,
    "batch_size": 16,
    "num_steps": 20,
    "steps_per_call": 5,
    "log_every": 10,
    "checkpoint_every": 10,
    "sample_every": 0,
}


def tiny_images(path):
    """An npz data set of 64 random 8x8 grey images (and 16 test images): quick to load."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (80, 8, 8, 1), dtype=np.uint8)
    np.savez(path, images=images[:64], test_images=images[64:])
    return f"npz:{path}"


def job(workdir, data, num_steps, on_device, error=None, **more):
    overrides = SMALL | {"data.train": data, "num_steps": num_steps, "data.on_device": on_device}
    return {"workdir": str(workdir), "overrides": overrides | more, "error": error}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(tmp, jobs, num_processes):
    """Runs `jobs` as one job of `num_processes` processes (in this process for one)."""
    if num_processes == 1:
        run_jobs(jobs, 0)
        return
    plan = tmp / f"plan{num_processes}-{free_port()}.json"
    plan.write_text(json.dumps({"jobs": jobs}))
    port, script = free_port(), ROOT / "tests" / "multihost_check.py"
    procs = [
        subprocess.Popen(
            [sys.executable, script, plan, str(num_processes), str(i), str(port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(num_processes)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-3000:] for e in errors]


def copy(source, target):
    shutil.copytree(source, target)


# (N, M, data path): a checkpoint written by N processes resumed by M
# (each multi-process job costs seconds of gloo set-up per compiled program on CI's 2 cores)
# (the batches of every N -> M on the host path: test_the_global_batches_do_not_depend_...)
RESUMES = [(1, 2, "device"), (2, 1, "host"), (1, 4, "device")]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Workdirs {name: path}: w<N>-<path> trained to HALF by N processes, u1-<path> to FULL
    uninterrupted by one, r<N><M>-<path> = w<N>-<path> resumed to FULL by M processes (see
    RESUMES); 'peer', the uninterrupted 2-process run of PEER; 'gan1' and 'gan2', configs/
    gan_ring8.py with GAN by 1 and 2 processes; the refused resumes 'pmap2' and 'batch4'; and
    'data', the data.train the VAEs use."""
    tmp = tmp_path_factory.mktemp("multihost")
    data = tiny_images(tmp / "tiny.npz")
    w = {"data": data}

    def run(name, num_steps, path, **more):
        w.setdefault(name, tmp / name)
        return job(w[name], data, num_steps, PATHS[path], **more)

    def resumes(m):
        for n, resumer, path in RESUMES:
            if resumer == m:
                copy(w[f"w{n}-{path}"], tmp / f"r{n}{m}-{path}")
                yield run(f"r{n}{m}-{path}", FULL, path)

    def gan(name):
        w[name] = tmp / name
        return {"workdir": str(w[name]), "config": "gan_ring8", "overrides": GAN}

    first = [run(f"{k}1-{p}", n, p) for p in PATHS for k, n in (("w", HALF), ("u", FULL))]
    run_processes(tmp, [*first, gan("gan1")], 1)
    copy(w["w1-device"], tmp / "pmap2")
    second = [run("pmap2", FULL, "device", error="one process", parallel="pmap")]
    second.append({"workdir": str(tmp / "peer"), "overrides": PEER | {"data.train": data}})
    w["peer"] = tmp / "peer"
    written_by_2 = sorted({path for n, _, path in RESUMES if n == 2})
    second += [*resumes(2), *(run(f"w2-{path}", HALF, path) for path in written_by_2)]
    second.append(gan("gan2"))
    run_processes(tmp, second, 2)
    copy(w["w1-device"], tmp / "batch4")
    fourth = [run("batch4", FULL, "device", error="divisible", batch_size=6)]
    fourth += list(resumes(4))
    run_processes(tmp, fourth, 4)
    run_processes(tmp, list(resumes(1)), 1)
    return w


def leaves(workdir):
    run = restore(workdir)
    return run.step, [np.asarray(x) for x in jax.tree.leaves(run.state)]


@pytest.mark.parametrize("path", PATHS)
def test_a_checkpoint_of_n_processes_resumes_on_m_processes(chain, path):
    """N -> M (RESUMES): the resumed run restores the step-HALF checkpoint (its log says so)
    and ends where the uninterrupted run ends (one process; N processes train like one)."""
    expected_step, expected = leaves(chain[f"u1-{path}"])
    assert expected_step == FULL
    pairs = [(n, m) for n, m, p in RESUMES if p == path]
    assert pairs
    for n, m in pairs:
        resumed = chain[f"r{n}{m}-{path}"]
        log = resumed.with_suffix(".log").read_text()
        assert f"resumed from step {HALF}" in log, (n, m, log)
        step, got = leaves(resumed)
        assert step == FULL
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"{n} -> {m}")


def test_two_processes_train_a_gan_like_one(chain):
    """Two critic updates per step on a batch split over 2 processes end where one process
    ends, with the same checkpoints and a metrics log (written by process 0)."""
    step, expected = leaves(chain["gan1"])
    got_step, got = leaves(chain["gan2"])
    assert step == got_step == GAN["num_steps"]
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert (chain["gan2"] / "metrics.jsonl").exists()
    assert sorted(int(p.name) for p in (chain["gan2"] / "checkpoints").iterdir()) == [10, 20]


def test_resumes_that_the_process_count_does_not_suit_are_refused_up_front(chain):
    pmap = chain["pmap2"].with_suffix(".error").read_text()
    assert "config.parallel='pmap' runs in one process" in pmap, pmap
    batch = chain["batch4"].with_suffix(".error").read_text()
    assert "batch_size=6 is not divisible by the 4 devices" in batch, batch
    for refused in ("pmap2", "batch4"):  # nothing written
        assert sorted(p.name for p in (chain[refused] / "checkpoints").iterdir()) == [str(HALF)]


def index_source(n):
    """Points whose label is the example's index."""
    points = np.stack([np.arange(n), -np.arange(n)], 1).astype(np.float32)
    return ArraySource({"point": points, "label": np.arange(n, dtype=np.int32)}, "point", None)


def test_the_global_batches_do_not_depend_on_the_process_count():
    """A data position saved by N processes (each at global batch 5, past an epoch boundary)
    is the same for every N and process, and M processes resumed from it read, side by side,
    the global batches an uninterrupted single process reads."""
    source, batch, seed = index_source(20), 8, 3
    whole = host_batches(source, batch_size=batch, seed=seed, process_count=1)
    global_batches = [next(whole)["label"] for _ in range(12)]
    states = []
    for n in (1, 2, 4):
        for i in range(n):
            it = host_batches(source, batch_size=batch, seed=seed, process_index=i, process_count=n)
            for _ in range(5):
                next(it)
            states.append(it.get_state())
    assert all(state == states[0] for state in states), states
    assert states[0]["next_batch"] == 5 and states[0]["epoch"] == 5 * batch // 20
    for m in (1, 2, 4):
        its = [
            host_batches(source, batch_size=batch, seed=seed, process_index=i, process_count=m)
            for i in range(m)
        ]
        for it in its:
            it.set_state(states[0])
        for j in range(5, 12):
            read = np.concatenate([next(it)["label"] for it in its])
            np.testing.assert_array_equal(read, global_batches[j], err_msg=f"M={m}, batch {j}")


def peer_command(workdir, data, port, process_id):
    return [
        sys.executable,
        "train.py",
        "--config",
        "configs/vae_mlp_mnist.py",
        *(f"--config.{key}={value}" for key, value in (PEER | {"data.train": data}).items()),
        "--workdir",
        str(workdir),
        "--coordinator_address",
        f"127.0.0.1:{port}",
        "--num_processes",
        "2",
        "--process_id",
        str(process_id),
        f"--peer_timeout={PEER_TIMEOUT}",
    ]


def start_peers(workdir, data):
    port = free_port()
    return [
        subprocess.Popen(
            peer_command(workdir, data, port, i),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]


def test_a_lost_process_ends_the_others_with_one_line_and_the_rerun_resumes(chain, tmp_path):
    """Process 1 of 2 killed after the first checkpoint: process 0 exits with code 5 within the
    peer timeout (plus the heartbeat interval and slack), naming process 1 and the newest
    complete checkpoint, with no traceback or crash dump; the same command on both processes
    resumes from that checkpoint and ends bitwise equal to the uninterrupted run."""
    workdir = tmp_path / "run"
    survivor, victim = start_peers(workdir, chain["data"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and survivor.poll() is None:
        if newest_complete_step(workdir / "checkpoints"):
            break
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    victim.wait()
    _, stderr = survivor.communicate(timeout=120)
    elapsed = time.monotonic() - killed
    assert survivor.returncode == PEER_LOST_EXIT_CODE, stderr[-3000:]
    assert elapsed < PEER_TIMEOUT + 10, elapsed
    for noise in ("Traceback", "Fatal Python error", "Check failure", "SIGABRT"):
        assert noise not in stderr, stderr[-3000:]
    line = stderr.strip().splitlines()[-1]
    match = re.fullmatch(
        r"error: lost process 1 of 2 \(.*\); the newest complete .* step (\d+) .*", line
    )
    assert match, line
    step = int(match.group(1))
    assert step == newest_complete_step(workdir / "checkpoints") and step < PEER["num_steps"]
    rerun = start_peers(workdir, chain["data"])
    errors = [p.communicate(timeout=300)[1] for p in rerun]
    assert [p.returncode for p in rerun] == [0, 0], [e[-3000:] for e in errors]
    assert f"resumed from step {step}" in errors[0]
    final, got = leaves(workdir)
    expected_step, expected = leaves(chain["peer"])
    assert final == expected_step == PEER["num_steps"]
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_peer_timeout_must_be_positive():
    with pytest.raises(ConfigError, match="peer_timeout"):
        initialize_distributed("127.0.0.1:1", 2, 0, peer_timeout=0)


class FakeCoordinationClient:
    """The key-value store of JAX's coordination service, in memory."""

    def __init__(self):
        self.kv = {}

    def key_value_set(self, key, value, allow_overwrite=False):
        if key in self.kv and not allow_overwrite:
            raise RuntimeError(f"{key} exists")
        self.kv[key] = value

    def key_value_dir_get(self, prefix):
        return [(k, v) for k, v in self.kv.items() if k.startswith(prefix)]


class Recorded(PeerWatchdog):
    """A watchdog that records whom it found lost instead of ending the process."""

    def _exit(self, lost):
        self.found = lost
        self._stop.set()


def test_the_watchdog_finds_the_peer_that_stopped_and_spares_one_that_is_done():
    client = FakeCoordinationClient()
    client.key_value_set("genjax/peers/beat/1", "7 done")  # finished normally, then exited
    client.key_value_set("genjax/peers/beat/2", "3 running")  # stopped: never beats again
    started = time.monotonic()
    watchdog = Recorded(client, 0, 3, timeout=0.5).start()
    watchdog._thread.join(10)
    assert watchdog.found == 2 and 0.5 < time.monotonic() - started < 5
    assert client.kv["genjax/peers/beat/0"].endswith(" running")
    # another survivor takes the recorded verdict at once, before its own timeout
    client.kv["genjax/peers/lost"] = "2"
    other = Recorded(client, 1, 3, timeout=60).start()
    other._thread.join(10)
    assert other.found == 2


def test_the_lost_line_names_the_process_and_the_checkpoint(monkeypatch, capsys, tmp_path):
    from genjax import parallel

    class Exited(Exception):
        pass

    def exit_(code):
        raise Exited(code)

    monkeypatch.setattr(parallel.os, "_exit", exit_)
    client = FakeCoordinationClient()
    watchdog = PeerWatchdog(client, 1, 4, timeout=5)
    (tmp_path / "checkpoints" / "40").mkdir(parents=True)
    (tmp_path / "checkpoints" / "60.orbax-checkpoint-tmp-123").mkdir()  # a save cut short
    watchdog.hint = lambda: resume_hint(tmp_path / "checkpoints")
    with pytest.raises(Exited) as exited:
        watchdog._exit(2)
    assert exited.value.args == (PEER_LOST_EXIT_CODE,) == (5,)
    assert client.kv["genjax/peers/lost"] == "2"
    line = capsys.readouterr().err.strip()
    assert line == (
        "error: lost process 2 of 4 (no heartbeat for 5 s: killed, crashed or its host gone); "
        f"the newest complete checkpoint is step 40 ({tmp_path / 'checkpoints' / '40'}): rerun "
        "the same command on every process to resume from it"
    )
