"""Claims of Lee & Vijayan (arXiv 2205.10952), B1..B3: the thresholds and the verdict logic, nothing else.

An input's internal code at a layer is its best-matching unit (BMU) on that layer's SOM. The evidence the judges
read comes from one function of the codes study, :func:`mclib.studies.codes.b_evidence`: B1 and B2
:func:`mclib.studies.codes.code_evidence` (purity and NMI of :mod:`mclib.som`, bootstrapped over inputs with the
fitted SOMs held fixed), B3 the base setting's interval and the condition map of :func:`mclib.studies.codes.b3_study`.
"""
from __future__ import annotations

from typing import Any, Mapping

from mclib.claims.core import Claim, Verdict, combine, judge_interval, map_sentence
from mclib.claims.guards import recorded_at_chance

CITE = "lee2024generalization"
CHAPTER = "notebooks/b_internal_codes.ipynb"
B1_MAX_PURITY = 0.5      # shallow codes are homogeneous: under half of the inputs share their BMU's majority class
B2_MIN_PURITY_GAIN = 0.2  # deep codes: purity rises by at least 0.2 from the shallowest layer to the logits
B2_MIN_NMI_GAIN = 0.0     # ... and NMI(BMU; label) rises


def judge_b1(values: Mapping[str, Any]) -> Verdict:
    """Every model: the 95% interval of the purity at the shallowest layer lies at or below 0.5."""
    return combine(recorded_at_chance(f"the {m} model", ev) or
                   judge_interval(f"the {m} purity at the shallowest layer", ev["purity_first"], B1_MAX_PURITY,
                                  above=False, spec=".2f") for m, ev in values["models"].items())


def judge_b2(values: Mapping[str, Any]) -> Verdict:
    """Every model: purity rises by at least 0.2 and NMI rises, from the shallowest layer to the logits (intervals)."""
    parts = []
    for m, ev in values["models"].items():
        degenerate = recorded_at_chance(f"the {m} model", ev)
        if degenerate is not None:   # a model at chance: its logits carry no class, so no rise can be read
            parts.append(degenerate)
            continue
        parts.append(judge_interval(f"the {m} purity gain from the shallowest layer to the logits", ev["purity_gain"],
                                    B2_MIN_PURITY_GAIN, spec=".2f"))
        parts.append(judge_interval(f"the {m} NMI gain", ev["nmi_gain"], B2_MIN_NMI_GAIN, spec=".2f"))
    return combine(parts)


def short_settings(conditions) -> list[dict]:
    """A one-at-a-time condition map with each setting cut to what it changes: ``model`` plus the keys that differ
    from that model's base setting (its first entry), the base itself labelled ``base``. For a readable sentence;
    the record keeps the full settings."""
    bases: dict[Any, Mapping] = {}
    out = []
    for entry in conditions or []:
        st = dict(entry.get("setting") or {})
        base = bases.setdefault(st.get("model"), st)
        diff = {k: v for k, v in st.items() if k != "model" and base.get(k) != v}
        short = ({"model": st["model"]} if "model" in st else {}) | (diff or {"setting": "base"})
        out.append({"setting": short, "measured": entry.get("measured") or {}})
    return out


def judge_b3(values: Mapping[str, Any]) -> Verdict:
    """Every model: the 95% interval of Spearman's rho (shallow-code label entropy vs smallest flipping radius) lies
    below 0; an interval containing 0 is inconclusive, one above 0 fails. The verdict judges the chapter's base
    setting (``models``); the reason adds where the effect appears, vanishes or stays undecided across the
    condition map ``conditions`` (:func:`mclib.claims.core.map_sentence`, same threshold), when one was recorded."""
    v = combine(recorded_at_chance(f"the {m} model", ev) or
                judge_interval(f"the {m} Spearman rho of shallow-code label entropy and smallest flipping radius",
                               ev["spearman"], 0.0, above=False, spec=".2f") for m, ev in values["models"].items())
    if not values.get("conditions"):
        return v
    where = map_sentence(short_settings(values["conditions"]), "spearman", 0.0, above=False, name="a negative rho",
                         spec=".2f")
    return Verdict(v.status, f"{v.reason}; condition map: {where}")


_B = [
    ("B1", "Shallow layers map inputs onto homogeneous codes", "ResNet-18/50, per composite layer",
     "for every model, the 95% bootstrap interval (over inputs) of the class purity of the shallowest layer's codes "
     "lies at or below 0.5.", judge_b1),
    ("B2", "Deep layers turn homogeneous codes into diverse codes", "ResNet-18/50, per composite layer",
     "for every model, the 95% bootstrap intervals of the rise from the shallowest layer to the logits lie at or "
     "above 0.2 for purity and at or above 0 for NMI(BMU; label).", judge_b2),
    ("B3", "Homogeneous codes underlie vulnerability to adversarial perturbations", "qualitative",
     "for every model, the 95% bootstrap interval of Spearman's rho between the label entropy at an input's "
     "shallow BMU and its smallest flipping L-inf radius lies below 0.", judge_b3),
]

CLAIMS = [Claim(id=i, statement=s, paper_value=p, cite=CITE, criterion=c[0].upper() + c[1:], judge=j, chapter=CHAPTER)
          for i, s, p, c, j in _B]
