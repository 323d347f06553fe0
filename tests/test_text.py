"""Token data, the sequence VAE and language model, their objectives and metrics, each
checked against an independent computation (numpy, PyTorch, hand values), and the bad
inputs of text, each one line and exit 2 in the CLIs.

Tiny throughout (a 24-token vocabulary, 8-token rows, 16-unit GRUs), so that the compiled
programs are small; one VAE and one LM are trained once per module and shared.
"""

import collections
import gzip
import hashlib
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import objectives
from genjax.config import ConfigError, base_config, resolve
from genjax.data import host_batches, load_source, resolve_sources
from genjax.data.text import (
    EOS_ID,
    PAD_ID,
    PYDOCS,
    SPECIALS,
    UNK_ID,
    TextOptions,
    Vocabulary,
    tfds_text_field,
)
from genjax.metrics import text as text_metrics

pytestmark = pytest.mark.xdist_group("text")

WORDS = "the a cat dog sat ran on under mat rug big small red blue quick slow".split()


def corpus(n=200, seed=0):
    """Sentences of 2-9 words: some longer than the tiny models' 7 words."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, rng.integers(2, 10))) for _ in range(n)]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text("\n".join(corpus()) + "\n")
    return path


def tiny_config(model, text_file, num_steps=20):
    c = base_config()
    c.model.name = model
    c.model.hidden, c.model.embed_dim = 16, 8
    if model == "text_vae":
        c.model.z_dim = 4
        c.vae.word_dropout, c.vae.free_bits, c.vae.kl_warmup_steps = 0.2, 0.1, 10
    c.data.train = f"text:{text_file}"
    c.data.vocab_size, c.data.max_len = 24, 8
    c.optim.lr, c.optim.b1 = 1e-2, 0.9
    c.batch_size, c.num_steps, c.steps_per_call = 16, num_steps, 10
    c.log_every = c.sample_every = c.checkpoint_every = 10
    c.num_samples = 4
    c.eval.num_samples, c.eval.nll_k = 20, 8
    return c


# ------------------------------------------------------------------- data


def test_vocabulary_is_specials_then_words_by_count_then_alphabet_and_encodes_with_eos():
    sentences = [["b", "a", "c"], ["a", "b"], ["d", "a"], ["c"]]  # a:3, b:2, c:2, d:1
    vocab = Vocabulary.build(sentences, 7)
    assert vocab.tokens == (*SPECIALS, "a", "b", "c")
    tokens, truncated = vocab.encode([["a", "d", "c"], ["b", "b", "b", "b"]], 4)
    np.testing.assert_array_equal(tokens, [[4, UNK_ID, 6, EOS_ID], [5, 5, 5, EOS_ID]])
    assert truncated == 1  # four words do not fit with <eos> in 4: cut, counted
    assert vocab.decode(tokens) == ["a <unk> c", "b b b"]


def test_text_file_splits_truncates_and_saves_the_vocabulary_in_the_workdir(text_file, tmp_path):
    options = TextOptions(vocab_size=24, max_len=8)
    train = load_source(f"text:{text_file}", "train", text=options)
    test = load_source(f"text:{text_file}", "test", text=options)
    assert (len(train), len(test)) == (180, 20) and train.shape == (8,)  # last 10% test
    lines = corpus()
    first = test.vocab.decode(test.to_arrays()["tokens"][:1])
    assert first == [" ".join(lines[180].split()[:7])]  # the first 7 words: 7 + <eos> = 8
    assert train.truncated == sum(len(s.split()) > 7 for s in lines[:180]) > 0
    rows = train.to_arrays()["tokens"]
    assert rows.dtype == np.int32 and set(rows[:, -1]) <= {PAD_ID, EOS_ID}
    # every row: words, one <eos>, then only <pad>
    assert all(list(r).count(EOS_ID) == 1 for r in rows)
    assert all((r[list(r).index(EOS_ID) + 1 :] == PAD_ID).all() for r in rows)
    vocab_file = tmp_path / "vocab.txt"
    train.vocab.write(vocab_file)
    assert Vocabulary.read(vocab_file) == train.vocab
    batch = next(host_batches(train, batch_size=4, seed=0, process_index=1, process_count=2))
    assert batch["tokens"].shape == (2, 8)  # the host path serves tokens too


def test_text_dir_uses_its_train_and_test_files_and_the_test_source_reads_the_train_vocab(
    tmp_path, text_file
):
    (tmp_path / "ptb").mkdir()
    (tmp_path / "ptb" / "ptb.train.txt").write_text("a b c\na b\n")
    (tmp_path / "ptb" / "ptb.test.txt").write_text("c zebra\n")
    c = base_config()
    c.data.train, c.data.vocab_size, c.data.max_len = f"text:{tmp_path / 'ptb'}", 10, 4
    train, test = resolve_sources(c.data)
    assert (len(train), len(test)) == (2, 1)
    assert test.vocab.decode(test.to_arrays()["tokens"]) == ["c <unk>"]
    c.data.test = f"text:{text_file}"  # another test set: tokenised with the training vocab
    _, other = resolve_sources(c.data)
    assert other.vocab == train.vocab and len(other) == 200
    assert set(other.vocab.decode(other.to_arrays()["tokens"])[0].split()) <= {"a", "<unk>"}


def test_pydocs_is_frozen_with_a_fixed_test_split():
    with gzip.open(PYDOCS, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) == 11_954 and len(set(lines)) == len(lines)
    assert all(4 <= len(line.split()) <= 30 for line in lines)
    digest = hashlib.sha256(PYDOCS.read_bytes()).hexdigest()
    assert digest == hashlib.sha256(Path(PYDOCS).read_bytes()).hexdigest()
    test = load_source("pydocs", "test", text=TextOptions(vocab_size=3000, max_len=32))
    assert len(test) == 1000 and test.truncated == 0
    assert test.vocab.decode(test.to_arrays()["tokens"][-1:])[0].split()[0] == lines[-1].split()[0]


def test_tfds_text_sets_need_their_field_and_read_it(tmp_path):
    import tensorflow_datasets as tfds

    assert tfds_text_field("lm1b:text") == ("lm1b", "text")
    assert tfds_text_field("mnist:3.0.1") == ("mnist:3.0.1", None)
    assert tfds_text_field("wikipedia/20230601.en:1.0.0:text") == (
        "wikipedia/20230601.en:1.0.0",
        "text",
    )
    options = TextOptions(vocab_size=50, max_len=12)
    with tfds.testing.mock_data(num_examples=20):
        with pytest.raises(ConfigError, match=r"name its text field.*valid fields: text"):
            load_source("tfds:lm1b", "train", text=options)
        with pytest.raises(ConfigError, match=r"no feature 'body'; its text features: text"):
            load_source("tfds:lm1b:body", "train", text=options)
        source = load_source("tfds:lm1b:text", "train", text=options)
        rows = source.take(np.arange(4))["tokens"]
    assert len(source) == 20 and rows.shape == (4, 12) and rows.dtype == np.int32
    assert ((rows == EOS_ID).sum(1) == 1).all()


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "holds no sentences"),
        (b"\x00\x01\x02binary", "binary file"),
        (b"\xff\xfe caf\xe9\n", "not UTF-8"),
    ],
)
def test_bad_text_files_are_one_line_errors(tmp_path, content, match):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=match):
        load_source(f"text:{path}", "train")


def test_a_vocabulary_smaller_than_the_special_tokens_is_refused(text_file):
    with pytest.raises(ConfigError, match=r"vocab_size=4 .*valid: >= 5"):
        load_source(f"text:{text_file}", "train", text=TextOptions(vocab_size=4))


# ------------------------------------------------------------ objectives


def test_kl_weight_warms_up_linearly_and_cycles():
    w = lambda s, **k: float(objectives.kl_weight(s, beta=2.0, **k))  # noqa: E731
    assert [w(s, warmup_steps=10) for s in (0, 5, 10, 20)] == [0.0, 1.0, 2.0, 2.0]
    # 4 cycles of 25 steps over 100: rise over 12.5 steps, then hold
    assert w(0, cycles=4, num_steps=100) == 0.0
    assert w(5, cycles=4, num_steps=100) == pytest.approx(2.0 * 5 / 12.5)
    assert w(20, cycles=4, num_steps=100) == 2.0 and w(25, cycles=4, num_steps=100) == 0.0
    assert w(3) == 2.0  # neither: beta


def test_free_bits_clamps_each_dimension_by_the_batch_mean_and_stops_its_gradient():
    kl = jnp.array([[0.1, 2.0, 0.4], [0.3, 1.0, 0.8]])  # batch means 0.2, 1.5, 0.6
    assert float(objectives.free_bits_kl(kl, 0.5)) == pytest.approx(0.5 + 1.5 + 0.6)
    grad = jax.grad(lambda k: objectives.free_bits_kl(k, 0.5))(kl)
    np.testing.assert_allclose(grad, [[0, 0.5, 0.5], [0, 0.5, 0.5]])
    # the clamp follows the given (global) batch mean, the value the local one
    value = objectives.free_bits_kl(kl, 0.5, batch_mean=jnp.array([1.0, 0.0, 1.0]))
    assert float(value) == pytest.approx(0.2 + 0.5 + 0.6)


def test_categorical_log_likelihood_is_masked_log_softmax():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 5)).astype(np.float32)
    targets = np.array([[1, 4, 0], [2, 2, 3]])
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = [log_p[0, 0, 1] + log_p[0, 1, 4], log_p[1, 0, 2] + log_p[1, 1, 2] + log_p[1, 2, 3]]
    got = objectives.categorical_log_likelihood(logits, targets, mask)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_gru_equals_torch_gru_with_the_same_weights():
    torch = pytest.importorskip("torch")
    from genjax.models.text import RecurrentLayer

    layer = RecurrentLayer(features=3, hidden=4)
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    h0 = np.random.default_rng(1).normal(size=(2, 4)).astype(np.float32)
    params = layer.init(jax.random.PRNGKey(0), x, h0)
    ours = np.asarray(layer.apply(params, x, h0))
    p = params["params"]
    gru = torch.nn.GRU(3, 4, batch_first=True)
    with torch.no_grad():
        gru.weight_ih_l0.copy_(torch.tensor(np.asarray(p["w_i"]).T))
        gru.weight_hh_l0.copy_(torch.tensor(np.asarray(p["w_h"]).T))
        gru.bias_ih_l0.copy_(torch.tensor(np.asarray(p["b_i"])))
        gru.bias_hh_l0.copy_(torch.tensor(np.asarray(p["b_h"])))
        theirs, _ = gru(torch.tensor(x), torch.tensor(h0)[None])
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-5, atol=1e-6)
    # a masked step carries the state: the last state is the last real step's
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    masked = np.asarray(layer.apply(params, x, h0, mask))
    np.testing.assert_allclose(masked[0, -1], ours[0, 2], rtol=1e-6)


# --------------------------------------------------------------- metrics


def brute_self_bleu(sentences, max_n=4, eps=0.1):
    """Self-BLEU written out: every sentence against every other, references' counts maxed."""
    scores = []
    for i, hyp in enumerate(sentences):
        refs = [s for j, s in enumerate(sentences) if j != i]
        logs = []
        for n in range(1, max_n + 1):
            grams = collections.Counter(text_metrics.ngrams(hyp, n))
            clip = collections.Counter()
            for r in refs:
                for g, c in collections.Counter(text_metrics.ngrams(r, n)).items():
                    clip[g] = max(clip[g], c)
            matched = sum(min(c, clip[g]) for g, c in grams.items())
            total = max(sum(grams.values()), 1)
            if n == 1 and matched == 0:
                logs = None
                break
            logs.append(math.log(matched / total if matched else eps / total))
        if logs is None:
            scores.append(0.0)
            continue
        ref_len = min((len(r) for r in refs), key=lambda r: (abs(r - len(hyp)), r))
        bp = 1.0 if len(hyp) > ref_len else math.exp(1 - ref_len / len(hyp))
        scores.append(bp * math.exp(sum(logs) / max_n))
    return float(np.mean(scores))


def test_diversity_metrics_against_direct_computations():
    s = [(1, 2, 3), (1, 2, 4), (5,)]
    assert text_metrics.distinct_n(s, 1) == 5 / 7
    assert text_metrics.distinct_n(s, 2) == 3 / 4  # (1,2) twice, (2,3), (2,4)
    assert text_metrics.novel_fraction(s, [(1, 2, 3), (9,)]) == 2 / 3
    rng = np.random.default_rng(0)
    sentences = [tuple(rng.integers(0, 6, rng.integers(1, 9))) for _ in range(40)]
    assert text_metrics.self_bleu(sentences) == pytest.approx(brute_self_bleu(sentences))
    assert text_metrics.self_bleu([(1, 2, 3, 4, 5)] * 3) == pytest.approx(1.0)
    rows = np.array([[4, 5, EOS_ID, PAD_ID], [6, 7, 8, 9]])
    assert text_metrics.sentences_of(rows) == [(4, 5), (6, 7, 8, 9)]


def test_mutual_information_and_active_units_against_direct_computations():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(30, 3)) * np.array([1.0, 0.05, 0.0])
    logvar = rng.normal(size=(30, 3)) * 0.1 - 1.0
    z = mean + np.exp(0.5 * logvar) * rng.normal(size=(30, 3))
    assert text_metrics.active_units(mean) == 1  # var 1: yes; 0.0025 and 0: no

    def log_q(zi, j):
        return -0.5 * np.sum(
            np.log(2 * np.pi) + logvar[j] + (zi - mean[j]) ** 2 / np.exp(logvar[j])
        )

    direct = np.mean([log_q(z[i], i) for i in range(30)])  # not the estimator's entropy term
    neg_entropy = np.mean([-0.5 * np.sum(np.log(2 * np.pi) + 1 + logvar[i]) for i in range(30)])
    aggregate = np.mean(
        [np.log(np.mean([np.exp(log_q(z[i], j)) for j in range(30)])) for i in range(30)]
    )
    got = text_metrics.mutual_information(mean, logvar, z)
    assert got == pytest.approx(neg_entropy - aggregate, rel=1e-9)
    assert abs(direct - neg_entropy) < 1.0  # the same quantity, one sample against exact


# -------------------------------------------------- training, sampling, evaluate


@pytest.fixture(scope="module")
def trained(tmp_path_factory, text_file):
    """A sequence VAE and a language model trained 20 steps on the tiny corpus."""
    from genjax.train import Trainer

    runs = {}
    for model in ("text_vae", "text_lm"):
        workdir = tmp_path_factory.mktemp(model)
        trainer = Trainer(tiny_config(model, text_file), workdir)
        runs[model] = (workdir, trainer, trainer.run())
    return runs


def test_training_logs_samples_as_text_and_keeps_the_vocabulary(trained):
    workdir, trainer, state = trained["text_vae"]
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [10, 20] and rows[-1]["skipped_updates"] == 0
    assert rows[0]["kl_weight"] == pytest.approx(0.9)  # warm-up over 10 steps, at step 9
    assert rows[-1]["recon"] < rows[0]["recon"] + 5
    assert Vocabulary.read(workdir / "vocab.txt") == trainer.train_source.vocab
    text = (workdir / "samples" / "step_00000020.txt").read_text().splitlines()
    assert len(text) == 4 and all(set(line.split()) <= set(WORDS) | {"<unk>"} for line in text)


def test_the_lm_test_nll_is_the_exact_likelihood_and_ppl_counts_eos(trained):
    from genjax.families.text import decoder_inputs
    from genjax.metrics.evaluate import evaluate

    workdir, trainer, state = trained["text_lm"]
    exp = trainer.experiment
    test = trainer.test_source.to_arrays()["tokens"]
    row = evaluate(exp, state, trainer.train_source, trainer.test_source, num_samples=20)
    (decoder,) = exp.models
    logits = np.asarray(
        decoder.apply({"params": state.params["decoder"]}, None, decoder_inputs(test)), np.float64
    )
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_p, test[..., None], -1)[..., 0] * (test != PAD_ID)
    nll = -picked.sum(1)
    assert row["test_nll"] == pytest.approx(nll.mean(), rel=1e-5)
    tokens = (test != PAD_ID).sum()  # words + <eos>
    assert row["test_ppl"] == pytest.approx(np.exp(nll.sum() / tokens), rel=1e-5)
    assert {"distinct_2", "distinct_2_floor", "self_bleu", "novel_fraction_floor"} <= set(row)
    assert "kl" not in row  # a model without z


def test_the_vae_metrics_bound_each_other_and_sample_py_writes_text(trained, tmp_path, cli):
    from genjax.families.text import posterior
    from genjax.metrics.evaluate import evaluate

    workdir, trainer, state = trained["text_vae"]
    exp = trainer.experiment
    row = evaluate(exp, state, trainer.train_source, trainer.test_source, nll_k=8, num_samples=20)
    assert row["test_nll"] <= row["test_neg_elbo"] + 1e-4  # log-mean-exp >= mean of the weights
    mean, logvar = posterior(exp.models, state, trainer.test_source.to_arrays()["tokens"])
    kl = 0.5 * np.sum(np.exp(logvar) + mean**2 - 1 - logvar, axis=1)
    assert row["kl"] == pytest.approx(kl.mean(), rel=1e-6)
    assert row["active_units"] == text_metrics.active_units(mean)
    assert 0 <= row["novel_fraction"] <= 1 and 0 < row["distinct_1_floor"] <= 1

    from genjax.sampling import write_samples

    out = write_samples(workdir, tmp_path / "r.txt", num=3, mode="reconstruct")
    lines = out.read_text().splitlines()
    assert [line[:2] for line in lines[:3]] == ["> ", "= ", ""]
    mine = tmp_path / "mine.txt"
    mine.write_text("the cat sat\nthe zebra ran on the mat\n")
    out = write_samples(workdir, tmp_path / "i.txt", mode="interpolate", sentences=str(mine))
    lines = out.read_text().splitlines()
    assert lines[:2] == ["> the cat sat", "> the <unk> ran on the mat"] and len(lines) == 2 + 7
    greedy = [
        write_samples(workdir, tmp_path / f"g{i}.txt", num=5, temperature=0.0, seed=1)
        for i in range(2)
    ]
    assert greedy[0].read_text() == greedy[1].read_text()
    # the CLI: a text mode that does not apply, and --temperature with a picture
    result = cli(
        "sample.py",
        "--workdir",
        trained["text_lm"][0],
        "--out",
        tmp_path / "x.txt",
        "--mode",
        "reconstruct",
    )
    assert result.returncode == 2 and "valid: samples" in result.stderr
    with pytest.raises(ConfigError, match="valid: --out FILE.txt"):
        write_samples(workdir, tmp_path / "x.png", temperature=0.5)
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x.txt").exists()


# ----------------------------------------------------------------- config


def test_the_vae_namespace_is_shared_and_each_family_reads_only_its_fields(text_file):
    c = tiny_config("text_vae", text_file)
    c.vae.binarize = True  # an image VAE's field
    with pytest.raises(ConfigError, match=r"vae.binarize: .*reads vae.\{beta, free_bits"):
        resolve(c)
    c = base_config()
    c.model.name, c.vae.word_dropout = "vae_mlp", 0.1  # a text VAE's field
    with pytest.raises(ConfigError, match=r"vae.word_dropout: model 'vae_mlp' is a vae"):
        resolve(c)
    c.vae.word_dropout, c.vae.free_bits, c.vae.kl_warmup_steps = None, 0.5, 100
    assert resolve(c).vae.free_bits == 0.5  # the image VAE reads these two
    c = tiny_config("text_lm", text_file)
    c.vae.word_dropout = 0.1
    with pytest.raises(ConfigError, match=r"model 'text_lm' is a lm"):
        resolve(c)


@pytest.mark.parametrize("name", ["text_vae", "text_lm", "text_vae_wikipedia"])
def test_the_text_configs_resolve(name):
    import importlib

    config = resolve(importlib.import_module(f"configs.{name}").get_config())
    assert config.data.vocab_size > 4 and config.model.name in ("text_vae", "text_lm")


def test_token_data_and_image_models_do_not_mix(text_file):
    from genjax.experiment import build

    c = base_config()
    c.model.name, c.data.train = "toy_mlp", f"text:{text_file}"  # (max_len,) looks like points
    with pytest.raises(ConfigError, match=r"does not take token sequences.*text_lm, text_vae"):
        build(c, "tokens", (8,))
    c = tiny_config("text_vae", text_file)
    c.data.train = "mnist5k"
    with pytest.raises(ConfigError, match=r"takes token sequences .*valid data: pydocs"):
        build(c, "image", (28, 28, 1))


def test_text_bad_inputs_are_one_line_exit_2_and_write_nothing(tmp_path, cli, text_file):
    from genjax.train import Trainer

    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    workdir = tmp_path / "w"
    result = cli(
        "train.py", "--config", "configs/text_lm.py", f"--workdir={workdir}",
        f"--config.data.train=text:{empty}",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "holds no sentences" in errors[0]
    for field, value, match in [
        ("vocab_size", 3, "valid: >= 5"),
        ("train", "mnist5k", "takes token sequences"),
        ("image_size", 28, "apply to images"),
    ]:
        c = tiny_config("text_lm", text_file)
        c.data[field] = value
        with pytest.raises(ConfigError, match=match):
            Trainer(c, workdir)
    assert not workdir.exists()
