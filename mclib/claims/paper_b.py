"""Claims of Lee & Vijayan (arXiv 2205.10952), B1..B3, with their criteria."""
from __future__ import annotations

from mclib.claims.core import Claim, inconclusive


def _not_written(values):
    return inconclusive("criterion not yet written")


_B = [
    ("B1", "Shallow layers map inputs onto homogeneous codes", "ResNet-18/50, per composite layer"),
    ("B2", "Deep layers turn homogeneous codes into diverse codes", "ResNet-18/50, per composite layer"),
    ("B3", "Homogeneous codes underlie vulnerability to adversarial perturbations", "qualitative"),
]

CLAIMS = [Claim(id=i, statement=s, paper_value=p, cite="lee2024generalization", criterion="not yet written.",
                judge=_not_written, chapter="notebooks/b_internal_codes.ipynb") for i, s, p in _B]
