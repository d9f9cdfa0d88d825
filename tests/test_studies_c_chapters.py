"""The C chapters' studies as the notebooks call them (issue 29): typed sizes, the shared repair data, the pieces
that turn measurements into exactly what the C judges read, and the record sentences. Synthetic frames stand in
for trained models (the measurements themselves are tested in test_studies_bonafide, test_studies_robustness,
test_studies_curves and test_studies_error_injection)."""
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from mclib import config, curves
from mclib.claims import paper_c
from mclib.studies import across, bonafide, robustness
from mclib.studies import curves as curve_study

TS = curves.grid(11)


def _sweep(acc_of_n, asr_of_n):
    """A sweep frame with N in acc_of_n and every t of TS: accuracy and ASR constant in t, given per N."""
    return pd.DataFrame([{"N": n, "t": t, "loss": 0.1, "acc": acc_of_n[n], "asr": asr_of_n[n]}
                         for n in acc_of_n for t in TS])


def _chapter(n_eval=400, n_asr=None):
    S = bonafide.Sizes.read("smoke")
    X = torch.zeros(2 * n_eval, 1, 8, 8)
    y = torch.zeros(2 * n_eval, dtype=torch.long)
    d = bonafide.RepairData("cnn", "mlp", {"cnn": "digits", "mlp": "digits"}, {"digits": (X, y)},
                            {"digits": (X, y)}, {"digits": (X[:n_eval], y[:n_eval])})
    n_asr = n_asr or {"single": 360, "all2all": 400}
    return bonafide.Chapter(SimpleNamespace(seed=0), S, d, {k: dict(v) for k, v in S.triggers.items()}, TS,
                            {"digits": n_asr})


def test_repair_sizes_are_typed_and_give_every_method_the_same_budget():
    S = bonafide.Sizes.read("quick")
    assert S.c4_seed_pairs == ((0, 1), (2, 3)) and S.second_settings == (("in-support", "single"),)
    assert S.budget == {"lr": S.lr, "optimizer": S.optimizer, "weight_decay": S.weight_decay}
    assert curve_study.Sizes.read("smoke").archs_of(0) == ("cnn", "vgg_bn")
    assert curve_study.Sizes.read("smoke").archs_of(1) == ("cnn",)
    assert across.Sizes.read("paper").datasets == ("cifar10", "svhn")
    assert robustness.Sizes.read("paper").map_train_eps == (0.015686, 0.031373, 0.062745)


def test_repair_data_gives_each_architecture_its_datasets_halves():
    ctx = config.setup("smoke", "cpu", style=False)
    d = bonafide.RepairData.load(ctx, bonafide.Sizes.read(ctx))
    X_test, y_test = d.test_of("cnn")
    X_eval, y_eval = d.eval_of("mlp")
    # the evaluation half is the test split minus the bonafide half, as repair.split_bonafide cuts it
    assert len(X_eval) == len(X_test) - len(X_test) // 2
    assert d.dataset == {"cnn": "digits", "mlp": "digits"} and len(d.train_of("cnn")[0]) == ctx.preset.n_train


def test_c2_evidence_reads_the_path_point_at_the_smallest_and_largest_n_and_is_judged():
    ch = _chapter()
    sweeps = {("corner", "single"): _sweep({20: 0.50, 100: 0.97}, {20: 0.60, 100: 0.01})}
    ends = pd.DataFrame([{"trigger": "corner", "mode": "single", "seed": s, "clean_acc": a, "asr": 1.0}
                         for s, a in ((0, 0.96), (1, 0.98))])
    rows = ch.c2_rows(sweeps, ends, [20, 100], [0.5])
    assert [(r["N"], r["acc"], r["asr"]) for r in rows] == [(20, 0.50, 0.60), (100, 0.97, 0.01)]
    assert all(r["end_acc"] == pytest.approx(0.97) for r in rows)
    conditions = paper_c.c2_conditions(*ch.c2_input(sweeps, ends, [20, 100], [0.5]))
    values, text = ch.c2_evidence(sweeps, ends, [20, 100], "cnn", conditions)
    (setting,) = values["settings"]
    assert setting["n_max"] == {"N": 100, "acc": 0.97, "asr": 0.01} and setting["n_min"]["N"] == 20
    assert setting["n_asr"] == 360 and values["n_eval"] == 400 and values["dataset"] == "digits"
    assert values["conditions"] is conditions and "N=100: 97.0% / 1.0% ASR" in text
    assert paper_c.judge_c2(values).status in {"holds", "fails", "inconclusive"}


def test_c3_columns_group_every_method_per_setting_and_n():
    ch = _chapter()
    table = pd.DataFrame([{"trigger": "corner", "mode": "single", "N": n, "method": m, "clean_acc": a, "asr": r}
                          for n in (20, 100) for m, a, r in ((ch.path_name, 0.9, 0.05), ("fine-tuning", 0.9, 0.8))])
    (c20, c100) = ch.c3_columns(table)
    assert c20["N"] == 20 and c20["methods"]["fine-tuning"] == {"clean_acc": 0.9, "asr": 0.8}
    cols, n_eval, n_asr, path = ch.c3_input(table)
    assert (n_eval, n_asr, path) == (400, {"single": 360, "all2all": 400}, "path (t=0.5)")
    values, text = ch.c3_evidence(table, "cnn", paper_c.c3_conditions(*ch.c3_input(table)))
    assert values["n_asr"] == 360 and [c["N"] for c in values["columns"]] == [20, 100]
    assert "fine-tuning 90.0/80.0" in text
    assert paper_c.judge_c3(values).status in {"holds", "fails", "inconclusive"}


def test_c5_evidence_reads_the_planted_trigger_at_the_backdoored_endpoint():
    ch = _chapter()
    frame = _sweep({100: 0.95}, {100: 0.99})
    aware = pd.DataFrame({"t": TS, "asr": np.linspace(0.9, 0.1, len(TS))})
    attack = {"change": 0.2, "aware": aware, "control": 0.97, "untampered": 0.3}
    v = ch.c5_evidence(attack, frame, 100, "cnn")
    assert (v["planted_asr"], v["end_acc"], v["control_asr"], v["untampered_asr"]) == (0.99, 0.95, 0.97, 0.3)
    assert v["aware"][0] == {"t": 0.0, "asr": 0.9} and v["n_asr"] == 360
    text = ch.c5_measured({"in-support": attack, "corner": attack}, {}, "mlp")
    # the largest aware ASR for t in [0.25, 0.75]: the line from 0.9 to 0.1 at t = 0.3 (the first grid point >= 0.25)
    assert "in-support ASR 66.0% at most" in text and "mlp" not in text


def test_region_and_the_display_helpers():
    frame = pd.DataFrame([{"trigger": "corner", "mode": "single", "N": n, "ok": v}
                          for n, v in ((20, "fails"), (100, "holds"))])
    assert bonafide.region(frame, "ok", "repaired") == "corner/single: repaired at N = 100"
    assert bonafide.region(frame.assign(ok="fails"), "ok", "repaired") == "corner/single: not at any N"
    X = torch.zeros(3, 1, 8, 8)
    X[1, 0, 6, 6] = 0.7    # inside the 3x3 bottom-right patch
    X[2, 0, 0, 0] = 0.9    # outside it
    assert bonafide.largest_under(X, {"size": 3, "position": "bottom_right"}) == pytest.approx(0.7)
    assert "outside the data's support" in bonafide.support_sentence({"corner": 0.0}, "digits")


def test_robustness_chapter_scales_the_step_with_the_radius_and_judges_its_evidence():
    S = robustness.Sizes.read("smoke")
    ch = robustness.Chapter(SimpleNamespace(seed=0), S, {"cnn": "digits"},
                            test_sets={"digits": (torch.zeros(64, 1, 8, 8), torch.zeros(64, dtype=torch.long))})
    assert ch.adv_kwargs(S.eps) == {"eps": S.eps, "steps": S.adv_steps, "step_size": S.adv_step_size}
    assert ch.adv_kwargs(S.eps / 2)["step_size"] == pytest.approx(S.adv_step_size / 2)
    assert TS[ch.t_index()] == 0.5
    g = np.random.default_rng(0)
    bump = np.sin(np.pi * np.asarray(TS))                      # a robustness-loss barrier in the middle
    per = {"pgd_loss": 1 + bump[:, None] + 0.1 * g.standard_normal((len(TS), 64)),
           "loss": 0.2 + 0.01 * g.standard_normal((len(TS), 64)), "eig": g.random((len(TS), 16))}
    df = pd.DataFrame({"t": TS, "acc": 0.9, "pgd_loss": per["pgd_loss"].mean(1), "loss": per["loss"].mean(1),
                       "eig_mean": per["eig"].mean(1)})
    c6, c7 = ch.evidence({"cnn": df}, {"cnn": per})
    assert c6["cnn"]["robust"]["lo"] > c6["cnn"]["robust"]["threshold"]   # the bump is a barrier over its interval
    assert c6["cnn"]["n_eval"] == 64 and c6["cnn"]["dataset"] == "digits" and c6["cnn"]["end_acc"] == 0.9
    assert paper_c.judge_c6({"archs": c6}).status in {"holds", "inconclusive"}
    assert paper_c.judge_c7({"archs": c7}).status in {"holds", "fails", "inconclusive"}
    assert robustness.interval_text({"estimate": 1, "lo": 0.5, "hi": 1.5}) == "1.000 [0.500, 1.500]"
    assert "cnn: robustness-loss barrier" in robustness.c6_measured(c6, {"cnn": "digits"}, S, 3)


def test_curves_chapter_names_its_seed_pairs():
    ctx = config.setup("smoke", "cpu", style=False)
    ch = curve_study.Chapter.prepare(ctx, curve_study.Sizes.read(ctx))
    assert ch.pairs == [(0, 1)] and ch.first == "0/1" and curve_study.seeds_label((2, 3)) == "2/3"
    assert ch.n_test() == {"cnn": ctx.preset.n_test, "vgg_bn": ctx.preset.n_test}


def test_across_names_each_records_architecture_and_dataset():
    p = config.get_preset("smoke")
    recs = across.records_of({"C1": {"values": {"archs": {}}}, "C4": {"values": {"arch": "mlp"}}}, p)
    assert recs == {"C1": {"arch": p.arch, "dataset": p.dataset, "archs": {}}, "C4": {"arch": "mlp", "dataset": p.dataset}}
    table = pd.DataFrame([{"claim": "C1", "arch": "cnn", "status": "holds"}])
    assert across.measured({"C1": {"digits"}}, table, ["digits"]) == (
        "architectures cnn; datasets measured per claim: C1: digits (required: digits); C1: cnn holds")
