"""Mode collapse on the 2-D Gaussian mixtures, by the protocol of VEEGAN and PacGAN.

Srivastava et al. (2017, sec. 5.1) and Lin et al. (2018, sec. 5, table 1): of 2,500 generated
points, a point is high quality if it lies within 3 standard deviations of its nearest mode
(Mahalanobis distance with that mode's sigma); a mode is captured if it is the nearest mode of
at least one high-quality point; the reverse KL compares the histogram of high-quality points
over modes with the uniform distribution of the data.
"""

from __future__ import annotations

import numpy as np

from genjax.metrics.classes import histogram_kl

THRESHOLD = 3.0  # standard deviations


def nearest_modes(points, means, std) -> tuple[np.ndarray, np.ndarray]:
    """(index of the nearest mode, Mahalanobis distance to it in units of that mode's sigma).

    `std` is one sigma for all modes or one per mode (isotropic Gaussians).
    """
    points = np.asarray(points, np.float64)
    means = np.asarray(means, np.float64)
    sigma = np.broadcast_to(np.asarray(std, np.float64), (len(means),))
    distances = np.linalg.norm(points[:, None, :] - means[None, :, :], axis=-1) / sigma[None, :]
    distances = np.where(np.isfinite(distances), distances, np.inf)
    nearest = np.argmin(distances, axis=1)
    return nearest, distances[np.arange(len(points)), nearest]


def mode_metrics(points, means, std) -> dict:
    """`modes` captured, `hq_fraction` of high-quality points, and `reverse_kl`.

    reverse_kl = KL(p_hq || uniform) over the modes, p_hq the histogram of the high-quality
    points' nearest modes: the "reverse KL" of PacGAN's table 1 (the generated distribution
    first; empty modes add 0, as in PacGAN's code). It is NaN when no point is high quality,
    as the histogram is then undefined (evaluate writes NaN as JSON null).
    """
    nearest, distance = nearest_modes(points, means, std)
    high_quality = distance < THRESHOLD
    counts = np.bincount(nearest[high_quality], minlength=len(means))
    return {
        "modes": float(np.count_nonzero(counts)),
        "hq_fraction": float(high_quality.mean()) if len(high_quality) else 0.0,
        "reverse_kl": histogram_kl(counts, np.ones(len(means))),
    }
