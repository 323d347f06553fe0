"""Per-backend lowering choices that change speed only: every result stays bitwise the same.

jax lowers its Threefry-2x32 hash (the bits behind every `jax.random` draw) on CPU as a
rolled 5-iteration loop, to compile faster. On XLA:CPU the loop cannot fuse with the draw's
consumer and carries every counter array through memory five times, which costs most in a
large draw such as the MLP VAE's Bernoulli draw per pixel (dynamic binarisation).
`unroll_large_threefry_on_cpu` lowers draws of at least `UNROLL_FROM` numbers with the
straight-line form of the same hash (Salmon et al. 2011: Random123's threefry2x32, 20
rounds), which XLA fuses into the draw, and keeps the loop for smaller ones, where unrolling
adds compile time (to the DCGAN step, for one) and no speed. The bits are identical:
tests/test_backend.py checks the published known answers for both forms, draws against a
process that does not call it, and that importing genjax does not call it.

`keep_freed_host_memory` tunes glibc's malloc for XLA:CPU: each call of a compiled step
allocates its temporary buffer (tens of MiB for a conv GAN) and frees it at the end. glibc
serves blocks above 32 MiB (its largest mmap threshold) with a fresh mapping, so every call
page-faults the whole buffer in, zero-filled, and unmaps it again; with mmap off and the heap
kept, the next call reuses the same pages (tests/test_backend.py counts the faults). Larger
buffers can still get a fresh mapping on every call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from functools import partial

import numpy as np
from jax import lax
from jax.extend.random import threefry2x32_p
from jax.interpreters import mlir

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))  # Random123, threefry2x32 rotation constants
_PARITY = np.uint32(0x1BD11BDA)  # Threefish's key-schedule parity constant
UNROLL_FROM = 2**14  # numbers per draw from which the CPU lowering is unrolled


def _rotate_left(x, bits):
    return (x << bits) | (x >> (np.uint32(32) - bits))


def _four_rounds(x0, x1, rotations):
    for bits in rotations:
        x0 = x0 + x1
        x1 = _rotate_left(x1, bits) ^ x0
    return x0, x1


def threefry2x32(key0, key1, count0, count1, rolled: bool = False):
    """Threefry-2x32 with 20 rounds: (key0, key1, count0, count1) -> (out0, out1), uint32.

    5 groups of 4 rounds with a key injection after each; `rolled` runs the groups as a
    loop (jax's CPU form), else straight-line.
    """
    schedule = (key0, key1, key0 ^ key1 ^ _PARITY)
    x0, x1 = count0 + schedule[0], count1 + schedule[1]
    if not rolled:
        for group in range(1, 6):
            x0, x1 = _four_rounds(x0, x1, [np.uint32(r) for r in _ROTATIONS[(group - 1) % 2]])
            x0 = x0 + schedule[group % 3]
            x1 = x1 + schedule[(group + 1) % 3] + np.uint32(group)
        return x0, x1

    def group_body(group, carry):  # carry: the schedule and the rotations rotated by group
        x0, x1, schedule, rotations = carry
        x0, x1 = _four_rounds(x0, x1, [rotations[0][j] for j in range(4)])
        x0 = x0 + schedule[1]
        x1 = x1 + schedule[2] + (group + 1).astype(np.uint32)
        return x0, x1, schedule[1:] + schedule[:1], rotations[::-1]

    rotations = tuple(np.array(r, np.uint32) for r in _ROTATIONS)
    x0, x1, _, _ = lax.fori_loop(0, 5, group_body, (x0, x1, schedule, rotations))
    return x0, x1


def _threefry_lowering(ctx, *args):
    rolled = math.prod(ctx.avals_out[0].shape) < UNROLL_FROM
    return mlir.lower_fun(partial(threefry2x32, rolled=rolled), multiple_results=True)(ctx, *args)


def unroll_large_threefry_on_cpu() -> None:
    """Lowers jax's threefry2x32 primitive on CPU with `threefry2x32`: the same random bits as
    jax's own lowering, faster on CPU for large draws.

    Process-wide, for programs compiled after the call; calling it again changes nothing.
    Importing genjax does not call it: train.py, sample.py, `python -m genjax.evaluate` and
    the benchmarks call it when they start, and a program that trains in-process (e.g. with
    `genjax.train.train_and_evaluate`) calls it first to train at the speed of train.py.
    """
    mlir.register_lowering(threefry2x32_p, _threefry_lowering, platform="cpu")


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
KEEP_FREE_BYTES = 2**30  # free memory the heap keeps before it gives any back to the system


def keep_freed_host_memory() -> bool:
    """Makes glibc's malloc serve every block from its heap (no mmap) and keep up to
    `KEEP_FREE_BYTES` of freed memory for reuse instead of returning it to the system.

    Process-wide and speed only. train.py and the benchmarks call it; a process's memory use
    then stays at its high-water mark (XLA:CPU's temporary buffers are reused, not remapped).
    Returns whether it took effect (False where the C library is not glibc).
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not hasattr(libc, "gnu_get_libc_version"):  # not glibc (musl's mallopt does nothing)
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, KEEP_FREE_BYTES))
