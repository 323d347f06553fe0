"""Mode counting over discrete labels: how many classes a model makes, and in what proportions.

The Stacked MNIST protocol of Metz et al. (2017) and PacGAN (Lin et al. 2018, sec. 5): a
classifier labels each generated sample; a mode (class) is covered if some sample gets it, and
KL(generated histogram || data histogram) measures how unevenly the modes are filled.
"""

from __future__ import annotations

import numpy as np


def histogram_kl(counts, reference) -> float:
    """KL(p || q) = sum_i p_i log(p_i / q_i), p = counts normalised, q = `reference` normalised.

    Empty bins of p add nothing (0 log 0 = 0), as in PacGAN's code (`KLD`, which sums over
    p_i != 0 only); q must be positive wherever p is. NaN when p has no mass at all.
    """
    p = np.asarray(counts, np.float64)
    q = np.asarray(reference, np.float64)
    if p.sum() <= 0:
        return float("nan")
    p, q = p / p.sum(), q / q.sum()
    used = p > 0
    return float(np.sum(p[used] * np.log(p[used] / q[used])))


def class_metrics(predicted, data_labels, num_classes: int) -> dict:
    """`classes_covered` (classes predicted at least once) and `class_kl` (KL(predicted class
    histogram || the data's class histogram)), the Stacked MNIST mode counts (Metz et al. 2017).

    A class the data never shows gets a floor of half an example, so the KL stays finite if the
    classifier predicts it anyway.
    """
    predicted_counts = np.bincount(np.asarray(predicted), minlength=num_classes)[:num_classes]
    data_counts = np.bincount(np.asarray(data_labels), minlength=num_classes)[:num_classes]
    data_counts = np.maximum(data_counts.astype(np.float64), 0.5)
    return {
        "classes_covered": float(np.count_nonzero(predicted_counts)),
        "class_kl": histogram_kl(predicted_counts, data_counts),
    }


def class_accuracy(predicted, labels) -> float:
    """The fraction of examples whose predicted class is their label: for a class-conditional
    model, how often the classifier agrees with the class each sample was drawn for (the
    accuracy measure of conditional GANs, e.g. Odena et al. 2017's AC-GAN)."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    if predicted.shape != labels.shape or not predicted.size:
        raise ValueError(f"{predicted.shape} predictions for {labels.shape} labels")
    return float(np.mean(predicted == labels))
