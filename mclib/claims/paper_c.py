"""Claims of Zhao et al. (ICLR 2020), C1..C8 -- placeholder until helper verdicts-c writes the criteria."""
from __future__ import annotations

from mclib.claims.core import Claim, inconclusive


def _not_written(values) -> "object":
    return inconclusive("criterion not yet written")


_C = [
    ("C1", "Untampered models are joined by high-accuracy curves where the straight line has a barrier",
     "VGG16 CIFAR-10: line max error 90% vs Bezier 7.01%", "notebooks/c1_curves.ipynb"),
    ("C2", "A path between two backdoored models trained on limited bonafide data removes the backdoor",
     "t=0.1: 2500 samples 88% clean / 1.1% ASR; 50 samples 63% / 2.5%", "notebooks/c2_backdoor_repair.ipynb"),
    ("C3", "Path repair beats fine-tuning, training from scratch, pruning and weight noise",
     "fine-tune 84/1.5 and 46/2.8; pruning 88/43 and 81/82", "notebooks/c2_backdoor_repair.ipynb"),
    ("C4", "Paths also repair error-injected models", "88-92% clean accuracy, 0% injection success",
     "notebooks/c4_error_injection.ipynb"),
    ("C5", "The repair holds against an attacker who knows the path", "repaired region narrows to t in [0.25, 0.75]",
     "notebooks/c2_backdoor_repair.ipynb"),
    ("C6", "A barrier in robustness loss lies between a regular and an adversarially trained model; standard loss has none",
     "PGD linf eps 8/255, 10 steps, step 2/255", "notebooks/c6_robustness_hessian.ipynb"),
    ("C7", "Robustness loss correlates with the largest input-Hessian eigenvalue along the path",
     "Pearson 0.71, 0.88, 0.86 for three model pairs", "notebooks/c6_robustness_hessian.ipynb"),
    ("C8", "These hold across architectures and datasets", "VGG/ResNet, CIFAR-10/SVHN",
     "notebooks/c8_across_architectures.ipynb"),
]

CLAIMS = [Claim(id=i, statement=s, paper_value=p, cite="zhao2020bridging", criterion="not yet written.",
                judge=_not_written, chapter=ch) for i, s, p, ch in _C]
