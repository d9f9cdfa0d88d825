"""Claims of Vrabel et al. (ICLR 2025), A1..A10, with their criteria."""
from __future__ import annotations

from mclib.claims.core import Claim, inconclusive


def _not_written(values):
    return inconclusive("criterion not yet written")


_A = [
    ("A1", "Real inputs of one class can show a loss barrier on the straight line between them",
     "GoogLeNet/ImageNet examples (jackfruit, banana, golf ball)", "notebooks/a1_real_paths.ipynb"),
    ("A2", "One bypass point removes the barrier, and B' is nearly indistinguishable from B",
     "max pixel of B'-B is 1-5% of the image's max pixel", "notebooks/a1_real_paths.ipynb"),
    ("A3", "Paths between connected inputs in trained models are simple, near-linear", "qualitative",
     "notebooks/a1_real_paths.ipynb"),
    ("A4", "Interpolated inputs (mixtures of real inputs that are modes of a class) are connected like real ones",
     "qualitative", "notebooks/a4_interpolated_synthetic.ipynb"),
    ("A5", "Synthetic inputs (FVO from noise) are modes and are connected", "qualitative",
     "notebooks/a4_interpolated_synthetic.ipynb"),
    ("A6", "Untrained networks show input-space connectivity too", "2 bypass rounds, losses about 5e-4..5e-3 after",
     "notebooks/a6_untrained.ipynb"),
    ("A7", "Barriers evolve during early training", "first 30 batches, 10 classes x 5 FVO pairs",
     "notebooks/a7_barrier_evolution.ipynb"),
    ("A8", "Real-real pairs have low barriers, real-adversarial pairs high ones",
     "median barrier 0.93 (real-real) vs 5.96 (real-adversarial)", "notebooks/a8_detection.ipynb"),
    ("A9", "Barrier heights detect adversarial examples", "single threshold accuracy ~0.89, AUROC ~0.94",
     "notebooks/a8_detection.ipynb"),
    ("A10", "Connectivity is a geometric effect of high dimension, explained by percolation",
     "site p_c: 2D 0.5927, 3D 0.3116, 4D 0.1969, 5D 0.1408, 6D 0.1090, 7D 0.0889", "notebooks/a10_percolation.ipynb"),
]

CLAIMS = [Claim(id=i, statement=s, paper_value=p, cite="vrabel2025input", criterion="not yet written.",
                judge=_not_written, chapter=ch) for i, s, p, ch in _A]
