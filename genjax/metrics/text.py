"""Metrics of sequence models: importance-sampled likelihood, the posterior's use of z, and
the diversity of samples.

- `importance_log_likelihood`: log p(x) per sentence from k importance samples (Burda et al.
  2016; the IWAE bound), with the k-sample ELBO, through genjax.metrics.nll's estimator.
- `mutual_information`: I(x; z) under q(x, z) = p_data(x) q(z|x), the estimator of Hoffman &
  Johnson (2016) as He et al. (2019) compute it: E_x[E_q log q(z|x)] - E_z log q(z), with
  the aggregate posterior q(z) the mixture of the test set's posteriors.
- `active_units`: latent dimensions u with Cov_x(E_q[z_u | x]) > 0.01 (Burda et al. 2016).
- `distinct_n`: distinct n-grams / all n-grams of a set of sentences (Li et al. 2016).
- `self_bleu`: mean BLEU-4 of each sentence against all the others as references (Zhu et al.
  2018, Texygen), with NLTK's smoothing method 1 (epsilon 0.1 for an order without matches).
- `novel_fraction`: the fraction of sentences that are not training sentences.
"""

from __future__ import annotations

import collections
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from genjax.data.text import EOS_ID, PAD_ID
from genjax.metrics import nll

LOGITS_BUDGET = 2**25  # floats of decoder logits per compiled call (128 MB)
LENGTH_BUCKET = 8  # sentences are scored padded to a multiple of this many tokens


def sequence_lengths(tokens) -> np.ndarray:
    """Tokens per row up to and including <eos> (what a likelihood scores), (N,)."""
    return np.sum(np.asarray(tokens) != PAD_ID, axis=1)


def length_batches(tokens, batch: int):
    """Batches of row indices of similar length, each with its padded width (a multiple of
    LENGTH_BUCKET): padding positions cost decoder time but add nothing to a likelihood."""
    lengths = sequence_lengths(tokens)
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        width = int(
            min(
                tokens.shape[1],
                -(-max(int(lengths[idx].max()), 1) // LENGTH_BUCKET) * LENGTH_BUCKET,
            )
        )
        yield idx, width


@functools.cache
def _estimator(encode, log_weight, k: int, chunk: int):
    def run(params, xb, indices, key):
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)
        return nll.importance_sampled_estimates(encode, log_weight, params, xb, keys, k, chunk)

    return jax.jit(run)


def importance_log_likelihood(encode, log_weight, params, tokens, *, k, seed, vocab_size):
    """(log p(x), ELBO) per row of `tokens` (N,), k importance samples each.

    encode and log_weight as genjax.metrics.nll.importance_sampled_estimates takes them; rows
    are scored in batches of similar length, each row's noise drawn from fold_in(key, row)."""
    tokens = np.asarray(tokens, np.int32)
    n, width = tokens.shape
    per_sample = width * vocab_size
    batch = max(1, min(n, 32, LOGITS_BUDGET // per_sample))
    chunk = max(1, min(k, LOGITS_BUDGET // (per_sample * batch)))
    key = jax.random.PRNGKey(seed)
    log_px, elbo = np.zeros(n), np.zeros(n)
    run = _estimator(encode, log_weight, k, chunk)
    for idx, w in length_batches(tokens, batch):
        xb = np.zeros((batch, w), np.int32)
        xb[: len(idx)] = tokens[idx, :w]
        xb[len(idx) :, 0] = EOS_ID  # padding rows: a one-token sentence, dropped below
        rows = np.zeros(batch, np.int32)
        rows[: len(idx)] = idx
        a, b = run(params, jnp.asarray(xb), jnp.asarray(rows), key)
        log_px[idx], elbo[idx] = np.asarray(a)[: len(idx)], np.asarray(b)[: len(idx)]
    return log_px, elbo


def mutual_information(mean, logvar, z) -> float:
    """E_x[E_q(z|x) log q(z|x)] - E_x E_q(z|x) log q(z), one z ~ q(z|x) per x (N, Z), q(z)
    the mixture (1/N) sum_j q(z|x_j) (Hoffman & Johnson 2016; He et al. 2019, their calc_mi)."""
    mean, logvar, z = (np.asarray(a, np.float64) for a in (mean, logvar, z))
    n, dim = mean.shape
    neg_entropy = np.mean(-0.5 * dim * math.log(2 * math.pi) - 0.5 * np.sum(1 + logvar, axis=1))
    log_q = np.empty(n)
    for start in range(0, n, 256):  # log q(z_i | x_j) for a block of i and every j
        d = z[start : start + 256, None, :] - mean[None]
        lp = -0.5 * np.sum(d * d * np.exp(-logvar)[None] + logvar[None] + math.log(2 * math.pi), 2)
        peak = lp.max(axis=1, keepdims=True)
        log_q[start : start + 256] = (peak[:, 0] + np.log(np.exp(lp - peak).sum(1))) - math.log(n)
    return float(neg_entropy - log_q.mean())


def active_units(mean, threshold: float = 0.01) -> int:
    """Dimensions whose posterior mean varies across the data: Cov_x(E[z_u|x]) > threshold."""
    return int(np.sum(np.var(np.asarray(mean, np.float64), axis=0) > threshold))


# --------------------------------------------------------------- diversity


def sentences_of(tokens) -> list[tuple[int, ...]]:
    """Each row's ids before its first <eos> or <pad>."""
    out = []
    for row in np.asarray(tokens).tolist():
        end = len(row)
        for stop in (EOS_ID, PAD_ID):
            if stop in row:
                end = min(end, row.index(stop))
        out.append(tuple(row[:end]))
    return out


def ngrams(sentence, n: int):
    return [tuple(sentence[i : i + n]) for i in range(len(sentence) - n + 1)]


def distinct_n(sentences, n: int) -> float:
    """Distinct n-grams over all n-grams of the sentences (Li et al. 2016); 0 for none."""
    grams = [g for s in sentences for g in ngrams(s, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def self_bleu(sentences, max_n: int = 4, epsilon: float = 0.1) -> float:
    """Mean over sentences of BLEU-max_n (uniform weights) against all other sentences as
    references (Zhu et al. 2018): modified n-gram precisions clipped by the largest count
    in any reference, the brevity penalty of the closest reference length (the shorter on a
    tie), NLTK's smoothing method 1 (an order with no match scores epsilon / its n-gram
    count), and 0 for a sentence without a unigram match (as NLTK's sentence_bleu).
    Linear in the number of n-grams: each n-gram's two largest counts and the sentence
    holding the largest give its clip against "every sentence but this one"."""
    sentences = [tuple(s) for s in sentences]
    if len(sentences) < 2:
        return 0.0
    counts = [[collections.Counter(ngrams(s, n)) for n in range(1, max_n + 1)] for s in sentences]
    best = [{} for _ in range(max_n)]  # n-gram -> (largest count, its sentence, second count)
    for i, per_order in enumerate(counts):
        for order, counter in enumerate(per_order):
            table = best[order]
            for gram, c in counter.items():
                top, owner, second = table.get(gram, (0, -1, 0))
                if c > top:
                    table[gram] = (c, i, top)
                elif c > second:
                    table[gram] = (top, owner, c)
    lengths = np.array([len(s) for s in sentences])
    by_length = collections.Counter(lengths.tolist())
    scores = []
    for i, per_order in enumerate(counts):
        log_p = 0.0
        for order, counter in enumerate(per_order):
            total = sum(counter.values())
            matched = 0
            for gram, c in counter.items():
                top, owner, second = best[order][gram]
                matched += min(c, second if owner == i else top)
            if order == 0 and matched == 0:
                log_p = -math.inf
                break
            precision = matched / max(total, 1) if matched else epsilon / max(total, 1)
            log_p += math.log(precision) / max_n
        if log_p == -math.inf:
            scores.append(0.0)
            continue
        c = len(sentences[i])
        others = by_length.copy()
        others[c] -= 1
        ref = min((k for k, v in others.items() if v > 0), key=lambda r: (abs(r - c), r))
        penalty = 1.0 if c > ref else math.exp(1 - ref / c) if c else 0.0
        scores.append(penalty * math.exp(log_p))
    return float(np.mean(scores))


def novel_fraction(sentences, training) -> float:
    """The fraction of `sentences` that are not in `training` (both as id tuples)."""
    known = set(training)
    return float(np.mean([s not in known for s in sentences])) if sentences else 0.0


def diversity(sentences, training) -> dict[str, float]:
    return {
        "distinct_1": distinct_n(sentences, 1),
        "distinct_2": distinct_n(sentences, 2),
        "self_bleu": self_bleu(sentences),
        "novel_fraction": novel_fraction(sentences, training),
    }


def sample_metrics(fake_tokens, test_tokens, train_tokens, vocab, *, seed: int) -> dict:
    """Diversity of generated sentences, each beside its `_floor` twin: the same figure for
    as many real test sentences (a random subset drawn with `seed` when there are more)."""
    fake = sentences_of(fake_tokens)
    test = sentences_of(test_tokens)
    n = min(len(fake), len(test))
    rng = np.random.default_rng(seed)
    real = [test[i] for i in np.sort(rng.choice(len(test), n, replace=False))]
    training = sentences_of(train_tokens)
    out = diversity(fake[:n], training)
    return out | {f"{k}_floor": v for k, v in diversity(real, training).items()}
