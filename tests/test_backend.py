"""genjax.backend: the CPU lowering of Threefry (unrolled for large draws) gives jax's bits."""

import json
import platform
import subprocess
import sys
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.random import threefry_2x32

from genjax.backend import UNROLL_FROM, threefry2x32, unroll_large_threefry_on_cpu

unroll_large_threefry_on_cpu()  # the lowering under test (idempotent: conftest calls it too)

# Random123's known-answer tests for threefry2x32 with 20 rounds: (key, counter) -> output.
KNOWN_ANSWERS = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
]

DRAWS = """
import jax, numpy as np
key = jax.random.key(7)
draws = jax.jit(lambda k: (jax.random.bits(k, (257,)), jax.random.uniform(k, (128, 28, 28, 1)),
                           jax.random.normal(jax.random.fold_in(jax.random.split(k)[1], 3), (9, 5)),
                           jax.random.randint(k, (64,), 0, 4500)))(key)
np.savez(OUT, *[np.asarray(d) for d in draws])
"""


@pytest.mark.parametrize("rolled", [False, True])
@pytest.mark.parametrize("key,count,expected", KNOWN_ANSWERS)
def test_threefry_matches_the_published_known_answers(key, count, expected, rolled):
    def u32(pair):
        return [jnp.asarray(v, jnp.uint32) for v in pair]

    out = jax.jit(partial(threefry2x32, rolled=rolled))(*u32(key), *u32(count))
    assert [int(v) for v in out] == list(expected)


@pytest.mark.parametrize("key,count,expected", KNOWN_ANSWERS)
def test_jax_threefry_lowered_on_cpu_matches_the_known_answers(key, count, expected):
    out = jax.jit(threefry_2x32)(jnp.asarray(key, jnp.uint32), jnp.asarray(count, jnp.uint32))
    assert [int(v) for v in out] == list(expected)


def test_draws_equal_those_of_jax_without_genjax(tmp_path):
    """The same bits, uniforms (a draw large enough to be unrolled), normals and integers as
    jax's own lowering in a fresh process."""
    theirs = tmp_path / "theirs.npz"
    code = f"OUT = {str(theirs)!r}\n" + DRAWS
    subprocess.run([sys.executable, "-c", code], check=True, env={"JAX_PLATFORMS": "cpu"})
    namespace = {"OUT": str(tmp_path / "ours.npz")}
    exec(DRAWS, namespace)
    ours, theirs = np.load(tmp_path / "ours.npz"), np.load(theirs)
    assert jax.default_backend() == "cpu"
    assert ours["arr_0"].size < UNROLL_FROM <= ours["arr_1"].size  # both lowerings drawn
    for name in theirs.files:
        np.testing.assert_array_equal(ours[name], theirs[name])


def test_large_draws_lower_without_the_loop_and_small_ones_with_it():
    """What the module is for: jax's CPU lowering is a rolled while loop; genjax's is
    straight-line for draws of at least UNROLL_FROM numbers (and the draws above are equal)."""
    assert jax.default_backend() == "cpu"

    def lowered(n):
        return jax.jit(lambda k: jax.random.uniform(k, (n,))).lower(jax.random.key(0)).as_text()

    assert "while" not in lowered(2 * UNROLL_FROM)
    assert "while" in lowered(UNROLL_FROM // 4)


LOWERINGS = """
import json, jax

def lowered():  # a draw large enough for genjax's lowering to unroll
    draw = jax.jit(lambda k: jax.random.bits(k, (4 * UNROLL_FROM,)))
    return draw.lower(jax.random.key(0)).as_text()

texts = [lowered()]
import genjax
texts.append(lowered())
import genjax.metrics.evaluate, genjax.sampling, genjax.train
texts.append(lowered())
for _ in range(2):  # calling it twice is the same as once
    genjax.backend.unroll_large_threefry_on_cpu()
    texts.append(lowered())
print(json.dumps(texts))
"""


def test_importing_genjax_leaves_jax_lowering_alone_and_the_call_changes_it():
    """`import genjax` (and its training, sampling and evaluation modules) leaves jax's CPU
    lowering of a large draw as it is; `unroll_large_threefry_on_cpu()` replaces it, and a
    second call changes nothing more. A fresh process: this one has called the function."""
    code = f"UNROLL_FROM = {UNROLL_FROM}\n" + LOWERINGS
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"JAX_PLATFORMS": "cpu"}
    )
    assert run.returncode == 0, run.stderr[-3000:]
    texts = json.loads(run.stdout.splitlines()[-1])
    jax_own, imported, modules_imported, called, called_again = texts
    assert imported == modules_imported == jax_own
    assert "while" in jax_own and "while" not in called  # the rolled loop, then straight-line
    assert called_again == called


FAULTS = """
import resource, sys
import jax, jax.numpy as jnp
from genjax.backend import keep_freed_host_memory
step = jax.jit(lambda x: jnp.cumsum(jnp.sin(x), axis=0)[::2].sum(0)).lower(jnp.ones((1024, 6144)))
step = step.compile()  # a 48 MiB temporary buffer per call: above glibc's mmap thresholds
x = jnp.ones((1024, 6144))

def faults_per_call(calls=10):
    step(x).block_until_ready()
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        step(x).block_until_ready()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / calls

print(step.memory_analysis().temp_size_in_bytes, faults_per_call(), keep_freed_host_memory())
print(min(faults_per_call() for _ in range(4)))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_freed_host_memory_is_reused_instead_of_faulted_in_on_every_call():
    """XLA:CPU frees each call's temporary buffer: by default glibc maps a block that large
    afresh every call and page-faults all of it in; after keep_freed_host_memory the pages
    stay (a fresh process, since the setting is process-wide)."""
    out = subprocess.run(
        [sys.executable, "-c", FAULTS], check=True, capture_output=True, text=True
    ).stdout.split()
    temp_bytes, faults_before, applied, faults_after = (
        int(out[0]),
        float(out[1]),
        out[2],
        float(out[3]),
    )
    assert temp_bytes > 32 * 2**20 and applied == "True"
    assert faults_before > 0.1 * temp_bytes / 4096  # the default: pages faulted in per call
    assert faults_after < 0.5 * faults_before  # ~0, at times ~10% of the pages (glibc's heaps)
