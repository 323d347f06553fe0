"""benchmarks/op_profile.py: a step's wall time split among its compiled ops.

The splitting and the pairing of trace events are checked on spans made by hand; the HLO
reading on a compiled function; then one profiled call of the smallest config end to end.
"""

import jax
import jax.numpy as jnp
import pytest

from benchmarks import op_profile


def test_wall_time_is_split_among_the_ops_running_and_adds_up():
    # a: 0-4, b: 2-6 (overlap 2-4), nothing 6-8, c: 8-10 partly outside the window [0, 9)
    spans = [(0.0, 4.0, "a"), (2.0, 6.0, "b"), (8.0, 10.0, "c")]
    share = op_profile.split_wall_time(spans, 0.0, 9.0)
    assert share == pytest.approx({"a": 3.0, "b": 3.0, "(none)": 2.0, "c": 1.0})
    assert sum(share.values()) == pytest.approx(9.0)


def test_an_async_run_ends_at_its_end_event_others_at_their_own_and_containers_are_out():
    ops = {"dot.1": ("dot", "f32[2]", ""), "while.1": ("while", "", ""), "f.1": ("loop", "", "")}

    def event(name, ts, dur=0.5):
        return {"name": name, "ts": ts, "dur": dur}

    events = [  # dot.1 runs twice (a loop body), each finishing asynchronously later
        event("while.1", 0.0, 20.0),
        event("dot.1", 1.0),
        event("end: dot.1", 4.0, 0.0),
        event("dot.1", 5.0),
        event("f.1", 6.0, 1.0),
        event("end: dot.1", 9.0, 0.0),
        event("end: f.1", 12.0, 0.0),  # bookkeeping after the op ran: not its end
        event("Python", 2.0, 10.0),  # not an op of the program
        event("dot.1", 30.0),  # after the window
    ]
    spans = op_profile.op_spans(events, ops, 0.0, 25.0)
    assert sorted(spans) == [(1.0, 4.0, "dot.1"), (5.0, 9.0, "dot.1"), (6.0, 7.0, "f.1")]


def test_hlo_ops_names_the_kind_shape_and_source_of_each_instruction():
    def f(x, w):
        return jnp.tanh(x @ w).sum(0)

    x = jnp.ones((8, 4))
    compiled = jax.jit(f).lower(x, jnp.ones((4, 3))).compile()
    ops = op_profile.hlo_ops(compiled.as_text())
    kinds = {kind for kind, _, _ in ops.values()}
    assert kinds & {"dot", "library fusion"}  # the matmul, however XLA:CPU runs it
    assert any(shape == "f32[3]" for _, shape, _ in ops.values())  # the result
    assert any("dot_general" in source or "tanh" in source for _, _, source in ops.values())


def test_profile_of_a_config_adds_up_to_its_ops(capsys):
    ms = op_profile.main(["--config", "gan_ring8", "--calls", "1", "--top", "3"])
    out = capsys.readouterr().out
    assert "| kind | ms/step | share |" in out and "gan_ring8" in out
    assert ms and all(t >= 0 for t in ms.values())
    assert sum(t for op, t in ms.items() if op != "(none)") > 0.5 * sum(ms.values())
