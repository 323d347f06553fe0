"""sample.py's text output (`--out FILE.txt`) for models of token data.

- `--mode samples`: `--num` sentences drawn at `--temperature` (0 = greedy), one a line.
- `--mode reconstruct`: test sentences (or the lines of `--sentences FILE`), each as
  `> sentence` followed by `= ` its greedy decoding from the posterior mean.
- `--mode interpolate`: homotopies (Bowman et al. 2016, sec. 5.3, Table 8): for consecutive
  pairs of test sentences (or of the lines of `--sentences FILE`), the greedy decodings of
  HOMOTOPY_STEPS evenly spaced points on the line between their posterior means, one block
  per pair, the two sentences first.

Sentences are decoded with the vocabulary training wrote to the workdir; a user's sentences
are split into tokens as the training data was (genjax.data.text.tokenize_like).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import jax
import numpy as np

from genjax.config import ConfigError

HOMOTOPY_STEPS = 7


def write_text(workdir, out, num: int, seed: int, mode: str, temperature, sentences):
    """Writes sample.py's text output for a workdir of a token-data model; returns `out`."""
    from genjax.data.text import KIND, read_lines, tokenize_like
    from genjax.experiment import load_config, restore

    out = Path(out)
    if out.suffix != ".txt":
        raise ConfigError(
            f"--out {out}: --temperature and --sentences write text; valid: --out FILE.txt"
        )
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: no such directory {out.parent}")
    config = load_config(workdir)
    if temperature is not None:
        if temperature < 0:
            raise ConfigError(f"--temperature {temperature}: valid: >= 0 (0 = greedy)")
        config.eval.temperature = float(temperature)
    run = restore(workdir, config)
    exp, state = run.experiment, run.state
    if exp.kind.name != KIND:
        raise ConfigError(
            f"--out {out}: text output needs a model of token data; {exp.config.model.name} "
            f"is on {exp.kind.name} data; valid: .png, .npz"
        )
    if mode not in exp.modes:
        raise ConfigError(
            f"--mode {mode} does not apply to this model and data ({exp.config.model.name} on "
            f"{exp.kind.name} data); valid: {', '.join(sorted(exp.modes))}"
        )
    vocab = run.train_source.vocab
    if sentences and mode == "samples":
        raise ConfigError("--sentences applies to --mode reconstruct and interpolate")
    if sentences:
        lines = read_lines("--sentences", Path(sentences))
        words = [tokenize_like(exp.config.data.train, " ".join(s)) for s in lines]
        rows, _ = vocab.encode(words, exp.config.data.max_len)
    else:
        rows = run.test_source.to_arrays()["tokens"]
    key = jax.random.PRNGKey(seed)
    family, c, models = exp.family, exp.config, exp.models
    if mode == "samples":
        lines = vocab.decode(np.asarray(jax.jit(partial(exp.sample, num=num))(state, key)))
    elif mode == "reconstruct":
        rows = rows[:num]
        recon = np.asarray(family.reconstruct(c, models, state, rows, key))
        lines = []
        for real, fake in zip(vocab.decode(rows), vocab.decode(recon), strict=True):
            lines += [f"> {real}", f"= {fake}", ""]
    else:
        pairs = min(num, len(rows) // 2)
        if pairs < 1:
            raise ConfigError("--mode interpolate needs at least two sentences")
        a, b = rows[0 : 2 * pairs : 2], rows[1 : 2 * pairs : 2]
        path = np.asarray(family.homotopy(c, models, state, a, b, HOMOTOPY_STEPS))
        path = path.reshape(pairs, HOMOTOPY_STEPS, -1)
        lines = []
        for i in range(pairs):
            ends = vocab.decode(np.stack([a[i], b[i]]))
            lines += [f"> {ends[0]}", f"> {ends[1]}"]
            lines += [f"{t}  {s}" for t, s in enumerate(vocab.decode(path[i]))] + [""]
    out.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")
    return out
