"""Sample-quality metrics between two sets of feature vectors (real, fake), pure numpy.

Fréchet distance (Heusel et al. 2017), kernel distance (Binkowski et al. 2018), improved
precision and recall (Kynkäänniemi et al. 2019) and density and coverage (Naeem et al. 2020).
Features are rows: `real` (N, D), `fake` (M, D); computation is in float64 and in row blocks,
so tens of thousands of 2048-d features fit in host memory.
"""

from __future__ import annotations

import numpy as np

BLOCK = 2048  # rows per block of a pairwise-distance computation


def _f64(x) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {x.shape}")
    return x


def frechet_distance(real, fake) -> float:
    """||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)): the FID (Heusel et al. 2017, eq. 6).

    The Gaussians' moments are the features' means and (unbiased) covariances. The trace of
    the matrix root is computed as sum_i sqrt(lambda_i) over the eigenvalues of the symmetric
    PSD matrix S_r^(1/2) S_f S_r^(1/2), which has the same spectrum as S_r S_f; this avoids
    the complex parts and the failures of a general `sqrtm` on near-singular covariances.
    """
    real, fake = _f64(real), _f64(fake)
    mu_r, mu_f = real.mean(axis=0), fake.mean(axis=0)
    cov_r, cov_f = np.cov(real, rowvar=False, ddof=1), np.cov(fake, rowvar=False, ddof=1)
    cov_r, cov_f = np.atleast_2d(cov_r), np.atleast_2d(cov_f)
    evals, evecs = np.linalg.eigh(cov_r)
    root_r = (evecs * np.sqrt(np.clip(evals, 0.0, None))) @ evecs.T
    middle = root_r @ cov_f @ root_r
    trace_root = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)))
    distance = np.sum((mu_r - mu_f) ** 2) + np.trace(cov_r) + np.trace(cov_f) - 2.0 * trace_root
    return float(distance)


def polynomial_kernel(x, y) -> np.ndarray:
    """k(x, y) = (x . y / d + 1)^3, the KID kernel (Binkowski et al. 2018, sec. 4.1)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x, y) -> float:
    """The KID reference estimator of MMD^2 between two equal-size sets (Binkowski et al. 2018).

    sum_{i != j} [k(x_i, x_j) + k(y_i, y_j)] / (m (m - 1)) - 2 sum_{i, j} k(x_i, y_j) / m^2,
    as in the authors' code and torch-fidelity's `kid` (the cross term keeps i = j).
    """
    m = x.shape[0]
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within = k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)
    return float(within / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kernel_distance(real, fake, *, num_subsets: int = 100, subset_size: int = 1000, seed=0):
    """KID: the mean unbiased MMD^2 over random subsets (Binkowski et al. 2018, sec. 4.1).

    `num_subsets` subsets of min(subset_size, N, M) rows, each drawn without replacement from
    each set, as torch-fidelity does (kid_subsets=100, kid_subset_size=1000). Returns
    (mean, standard deviation) over the subsets.
    """
    real, fake = _f64(real), _f64(fake)
    m = min(subset_size, len(real), len(fake))
    if m < 2:
        raise ValueError(f"KID needs at least 2 features per set, got {len(real)} and {len(fake)}")
    rng = np.random.default_rng(seed)
    values = [
        mmd2_unbiased(
            real[rng.choice(len(real), m, replace=False)],
            fake[rng.choice(len(fake), m, replace=False)],
        )
        for _ in range(num_subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


def pairwise_distances(x, y) -> np.ndarray:
    """Euclidean distances (N, M) between the rows of x and y, clipped at 0 before the root."""
    squared = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    return np.sqrt(np.clip(squared, 0.0, None))


def knn_radii(x, k: int) -> np.ndarray:
    """Distance from each row of x to its k-th nearest other row (itself excluded), (N,)."""
    x = _f64(x)
    if len(x) <= k:
        raise ValueError(f"k-nearest-neighbour radii with k={k} need more than {k} rows")
    radii = np.empty(len(x))
    for start in range(0, len(x), BLOCK):
        block = pairwise_distances(x[start : start + BLOCK], x)
        rows = np.arange(len(block))
        block[rows, start + rows] = np.inf
        radii[start : start + BLOCK] = np.partition(block, k - 1, axis=1)[:, k - 1]
    return radii


def _ball_counts(centres, radii, points) -> np.ndarray:
    """For each point, how many balls B(centre_i, radius_i) contain it (distance <= radius)."""
    counts = np.zeros(len(points), np.int64)
    for start in range(0, len(points), BLOCK):
        block = pairwise_distances(points[start : start + BLOCK], centres)
        counts[start : start + BLOCK] = (block <= radii[None, :]).sum(axis=1)
    return counts


def precision_recall(real, fake, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall with k-NN balls (Kynkäänniemi et al. 2019, eqs. 1-2).

    Precision: the fraction of fakes inside the real manifold, the union of the balls around
    each real feature reaching its k-th nearest real neighbour; recall: the fraction of reals
    inside the fake manifold built the same way.
    """
    real, fake = _f64(real), _f64(fake)
    precision = np.mean(_ball_counts(real, knn_radii(real, k), fake) > 0)
    recall = np.mean(_ball_counts(fake, knn_radii(fake, k), real) > 0)
    return float(precision), float(recall)


def density_coverage(real, fake, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020, eqs. 3-4), with k-NN balls around real features.

    Density = (1 / kM) sum_j #{real balls containing fake_j}; coverage = the fraction of real
    balls that contain at least one fake.
    """
    real, fake = _f64(real), _f64(fake)
    radii = knn_radii(real, k)
    density = _ball_counts(real, radii, fake).sum() / (k * len(fake))
    covered = np.zeros(len(real), bool)
    for start in range(0, len(real), BLOCK):
        block = pairwise_distances(real[start : start + BLOCK], fake)
        covered[start : start + BLOCK] = (block <= radii[start : start + BLOCK, None]).any(axis=1)
    return float(density), float(covered.mean())


def feature_metrics(real, fake, space: str, *, seed: int = 0, pr_k: int = 3, dc_k: int = 5):
    """Every feature-space metric as a flat dict: fd_, kid_, precision_, recall_, density_,
    coverage_ + `space`; those the sample sizes cannot support are left out."""
    real, fake = _f64(real), _f64(fake)
    n = min(len(real), len(fake))
    out = {}
    if n >= 2:
        out[f"fd_{space}"] = frechet_distance(real, fake)
        out[f"kid_{space}"] = kernel_distance(real, fake, seed=seed)[0]
    if n > pr_k:
        out[f"precision_{space}"], out[f"recall_{space}"] = precision_recall(real, fake, pr_k)
    if n > dc_k:
        out[f"density_{space}"], out[f"coverage_{space}"] = density_coverage(real, fake, dc_k)
    return out
