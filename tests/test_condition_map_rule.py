"""Issue 29, item 3: a condition map's plot and its sentence must judge each setting by the same rule. The sentence
(:func:`mclib.claims.core.map_sentence`) calls a setting whose interval rests on fewer than ``MIN_UNITS`` units
undecided; :func:`mclib.studies.pairs.plot_condition_map` used to copy the interval rule without ``MIN_UNITS`` and
colour it as holding. The rule now has one home below both layers (studies may not import claims):
:func:`mclib.stats.interval_side`, which the verdict, the sentence and the plot all call."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from mclib.claims import core  # noqa: E402
from mclib.studies import pairs  # noqa: E402

#: Three units, the whole interval above the threshold 0.5: holds by its bounds, undecided by MIN_UNITS.
FEW = [{"setting": {"arch": "cnn"}, "measured": {"x": {"estimate": 0.9, "lo": 0.8, "hi": 1.0, "n": 3}}}]
GREY = "#888888"


def test_the_sentence_calls_a_three_unit_interval_undecided():
    assert core.MIN_UNITS > 3
    assert "is undecided at arch=cnn" in core.map_sentence(FEW, "x", 0.5)


def test_the_plot_greys_the_setting_the_sentence_calls_undecided():
    fig, ax = plt.subplots()
    pairs.plot_condition_map(ax, FEW, "x", 0.5)
    whisker = ax.lines[0]
    plt.close(fig)
    assert mcolors.to_hex(whisker.get_color()) == GREY


def test_the_plot_colours_decided_settings_and_marks_a_missing_interval():
    rows = [{"setting": {"arch": "a"}, "measured": {"x": {"estimate": 0.9, "lo": 0.8, "hi": 1.0, "n": 50}}},
            {"setting": {"arch": "b"}, "measured": {"x": {"estimate": 0.2, "lo": 0.1, "hi": 0.3, "n": 50}}},
            {"setting": {"arch": "c"}, "measured": {"x": {"estimate": float("nan"), "lo": float("nan"),
                                                          "hi": float("nan"), "n": 50}}}]
    fig, ax = plt.subplots()
    pairs.plot_condition_map(ax, rows, "x", 0.5)
    colours = [mcolors.to_hex(line.get_color()) for line in ax.lines[:4:2]]
    texts = [t.get_text().strip() for t in ax.texts]
    plt.close(fig)
    assert colours[0] != GREY and colours[1] != GREY and colours[0] != colours[1]
    assert texts == ["n/a"]
    assert "appears at arch=a" in core.map_sentence(rows[:2], "x", 0.5)
    assert "vanishes at arch=b" in core.map_sentence(rows[:2], "x", 0.5)


def test_interval_side_is_the_judges_rule():
    from mclib import stats

    assert stats.interval_side(0.6, 0.9, 0.5) == "holds" == core.judge_interval("x", {"lo": 0.6, "hi": 0.9, "estimate": 0.7, "n": 9}, 0.5).status
    assert stats.interval_side(0.1, 0.4, 0.5) == "fails"
    assert stats.interval_side(0.4, 0.6, 0.5) == "inconclusive"
    assert stats.interval_side(0.1, 0.4, 0.5, above=False) == "holds"
    assert stats.interval_side(0.6, 0.9, 0.5, n=stats.MIN_UNITS - 1) == "inconclusive"
    assert stats.interval_side(0.5, 0.5, 0.5) == "holds" == stats.interval_side(0.5, 0.5, 0.5, above=False)
    for bad in ((0.9, 0.1), (float("nan"), 1.0)):
        try:
            stats.interval_side(*bad, 0.5)
        except ValueError:
            continue
        raise AssertionError(f"{bad} was accepted")
