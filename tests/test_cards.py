"""Claim cards, captioned figures and the rerun box: what a chapter page shows a reader."""
from __future__ import annotations

import base64
import html
import html.parser
import io
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from mclib import book, cards, runner  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BIB = {"zhao2020bridging": ("Zhao et al. 2020", "https://arxiv.org/abs/2005.00060")}
RECORD = {
    "id": "C6", "statement": "A barrier in robustness loss lies between a regular and an adversarially trained model",
    "paper_value": "robustness loss peaks mid-path", "cite": "zhao2020bridging",
    "criterion": "the bump's 95% interval lies above 0.05 nats", "measured": "bump 0.31 [0.22, 0.40] nats",
    "status": "holds", "reason": "holds: the interval [0.22, 0.40] lies above 0.05",
    "values": {"secret_raw_numbers": [1.2345678, 9.87654321]}, "chapter": "notebooks/c6_robustness_hessian.ipynb",
}


class _Parsed(html.parser.HTMLParser):
    """Tags (with attributes) and visible text of an HTML fragment; fails on unbalanced tags."""

    VOID = {"img", "br", "hr", "meta", "link", "input"}

    def __init__(self, text):
        super().__init__()
        self.tags, self.text, self.stack = [], [], []
        self.feed(text)
        assert not self.stack, f"unclosed tags {self.stack}"

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)

    def visible(self):
        return re.sub(r"\s+", " ", "".join(self.text))


def test_card_shows_every_field_a_reader_needs_and_no_raw_values():
    page = _Parsed(cards.card_html(RECORD, bib=BIB))
    text = page.visible()
    for key in ("id", "statement", "paper_value", "criterion", "measured", "reason"):
        assert RECORD[key] in text, key
    assert "Zhao et al. 2020" in text
    assert ("a", {"class": "mclib-cite", "href": "https://arxiv.org/abs/2005.00060"}) in page.tags
    assert "holds" in text and "secret_raw_numbers" not in text and "1.2345678" not in text
    assert "claims/C6.json" in text  # where the raw values are


@pytest.mark.parametrize("status", ["holds", "fails", "inconclusive"])
def test_badge_class_follows_the_verdict(status):
    page = _Parsed(cards.card_html({**RECORD, "status": status}, bib=BIB))
    classes = [a.get("class", "") for _, a in page.tags]
    assert f"mclib-badge mclib-badge-{status}" in classes
    assert f"mclib-card mclib-card-{status}" in classes
    assert f"{cards.BADGES[status]} {status}" in page.visible()


def test_each_verdict_has_its_own_colour_in_the_css():
    css = (ROOT / "book" / "_static" / "mclib.css").read_text()
    colours = {}
    for status in ("holds", "fails", "inconclusive", "not-run"):
        rule = re.search(r"\.mclib-badge-" + status + r"\s*\{([^}]*)\}", css)
        assert rule, f"no CSS rule for .mclib-badge-{status}"
        colours[status] = re.search(r"background:\s*([^;]+);", rule.group(1)).group(1)
    assert len(set(colours.values())) == 4, colours


def test_card_tolerates_missing_keys():
    bare = _Parsed(cards.card_html({"id": "B2"}, bib={})).visible()
    assert "B2" in bare and "not run" in bare and "None" not in bare and "Paper" not in bare
    # records carry their verdict as ``status``; a boolean ``holds`` is no verdict
    assert cards.status_of({"holds": True}) == "not run"


def test_card_escapes_text_and_shows_an_unknown_citation_key_as_it_is():
    rec = {**RECORD, "statement": "x < y & <script>alert(1)</script>", "cite": "nobody1999"}
    out = cards.card_html(rec, bib=BIB)
    assert "<script>" not in out and "x &lt; y &amp; &lt;script&gt;" in out
    assert '<span class="mclib-cite">nobody1999</span>' in out


def test_card_reads_the_books_bibliography_by_default():
    out = cards.card_html(RECORD)
    assert 'href="https://arxiv.org/abs/2005.00060"' in out and "Zhao et al. 2020" in out


def test_bad_status_or_record_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"status 'maybe'.*holds, fails, inconclusive"):
        cards.card_html({**RECORD, "status": "maybe"})
    with pytest.raises(ValueError, match="status must be one of"):
        cards.badge_html("yes")
    with pytest.raises(TypeError, match="record must be a mapping"):
        cards.card_html(["C6"])
    with pytest.raises(ValueError, match="maybe"):
        cards.Card({"id": "C6", "status": "maybe"})


def test_card_display_object_renders_the_same_html():
    card = cards.Card(RECORD)
    assert card._repr_html_() == cards.card_html(RECORD)
    assert repr(card).startswith("C6: holds")


def _fig(width=6.0, height=2.0):
    fig, ax = plt.subplots(figsize=(width, height))
    ax.plot([0, 1], [0, 1])
    return fig


def test_figure_html_is_a_captioned_numbered_figure_with_alt_text_and_a_high_dpi_png():
    fig = _fig()
    out = cards.figure_html(fig, "Loss along the path <a=0..1>.", alt="Two rising lines", number=3, dpi=200)
    plt.close(fig)
    page = _Parsed(out)
    names = [t for t, _ in page.tags]
    assert names[:2] == ["figure", "img"] and "figcaption" in names
    img = dict(page.tags)["img"]
    assert img["alt"] == "Two rising lines"
    assert page.visible() == "Figure 3. Loss along the path <a=0..1>."
    png = base64.b64decode(img["src"].split(",", 1)[1])
    pixels = Image.open(io.BytesIO(png)).size[0]
    # drawn at 200 dpi, shown at 100 CSS px per inch: two image pixels per CSS pixel (sharp on HiDPI)
    assert int(img["width"]) == round(pixels * cards.CSS_PX_PER_INCH / 200)
    assert 500 < int(img["width"]) <= 600  # a 6-inch figure, trimmed to its content


def test_figure_html_svg_and_bad_arguments():
    fig = _fig()
    out = cards.figure_html(fig, "A caption.", alt="A line", fmt="svg")
    assert "data:image/svg+xml;base64," in out and "caption-number" not in out
    for kwargs, match in [({"caption": " "}, "caption must be a non-empty"), ({"alt": ""}, "alt must be"),
                          ({"alt": "../_build/fig.png"}, "not name a file"), ({"fmt": "jpg"}, "fmt must be")]:
        args = {"caption": "A caption.", "alt": "A line", **kwargs}
        with pytest.raises(ValueError, match=match):
            cards.figure_html(fig, **args)
    plt.close(fig)


def test_figure_displays_numbered_figures_and_closes_them(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj.data))
    monkeypatch.setattr(cards, "_figure_numbers", iter(range(1, 100)))
    figs = [_fig(), _fig()]
    assert cards.figure(figs[0], "First.", alt="a line") is None  # nothing left to print as a repr
    cards.figure(figs[1], "Second.", alt="a line")
    assert [re.search(r"Figure (\d+)\.", s).group(1) for s in shown] == ["1", "2"]
    assert not any(plt.fignum_exists(f.number) for f in figs)


def _rerun_command(box: str) -> str:
    return re.search(r"```bash\n(?:.*\n)*?(\.venv/bin/python -m mclib\.book run .*)\n", box).group(1)


def test_rerun_box_gives_a_command_that_works_from_a_fresh_clone():
    params = book.parameters("quick", "auto", 0, None, None)
    box = book.rerun_box(Path("notebooks/c6_robustness_hessian.ipynb"), params)
    assert "make setup" in box and "mclib-rerun" in box
    assert _rerun_command(box) == ".venv/bin/python -m mclib.book run notebooks/c6_robustness_hessian.ipynb --preset quick"
    assert "papermill" not in box
    other = book.rerun_box(Path("notebooks/a1.ipynb"), book.parameters("smoke", "cpu", 3, "/data", None))
    assert _rerun_command(other).endswith("--preset smoke --device cpu --seed 3 --data-root /data")
    # the box names the values itself: the report hides its parameters cell, so "the cell below" would point nowhere
    assert "`preset='smoke'`" in other and "`seed=3`" in other and "`device='cpu'`" in other
    assert "cell below" not in other


def _executed(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Title"), nbformat.v4.new_code_cell('preset = "quick"'),
                nbformat.v4.new_code_cell('# Parameters\npreset = "smoke"'), nbformat.v4.new_code_cell("1 + 1")]
    nb.cells[1].metadata["tags"] = ["parameters"]
    nb.cells[2].metadata["tags"] = ["injected-parameters"]
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    return path


def test_executed_copy_gets_the_rerun_box_and_shows_the_parameters_once(tmp_path):
    path = _executed(tmp_path)
    runner._add_rerun_box(path, Path("notebooks/x.ipynb"), book.parameters("smoke", "auto", 0, None, None))
    cells = nbformat.read(path, as_version=4).cells
    tags = [c.metadata.get("tags", []) for c in cells]
    assert tags == [[], ["mclib-summary-box"], ["mclib-rerun-box"], ["parameters", "remove-cell"],
                    ["injected-parameters", "remove-cell"], []]  # the rerun box names the values in words
    assert "--preset smoke" in cells[2].source and "This build" in cells[1].source


def test_a_notebook_without_injected_parameters_keeps_its_own():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('preset = "quick"')]
    nb.cells[0].metadata["tags"] = ["parameters"]
    book.quiet_parameters(nb)
    assert nb.cells[0].metadata["tags"] == ["parameters"]


def test_a_page_tagged_remove_parameters_shows_neither_parameters_cell():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('preset = "quick"'), nbformat.v4.new_code_cell('preset = "smoke"'),
                nbformat.v4.new_code_cell("1")]
    nb.cells[0].metadata["tags"] = ["parameters", "remove-parameters"]
    nb.cells[1].metadata["tags"] = ["injected-parameters"]
    book.quiet_parameters(nb)
    assert [c.metadata.get("tags", []) for c in nb.cells] == [
        ["parameters", "remove-parameters", "remove-cell"], ["injected-parameters", "remove-cell"], []]


# --- the summary box a chapter opens with; the card's head, one line of why, folded numbers (issue 28) ---

def test_one_line_is_the_reasons_first_clause_outside_brackets():
    assert cards.one_line("a [1; 2] b; c; d") == "a [1; 2] b"
    assert cards.one_line("  just one  part ") == "just one part"
    assert cards.one_line(None) == ""


def test_card_head_carries_the_badge_the_why_is_one_line_and_the_numbers_fold():
    rec = {**RECORD, "reason": "first part [0.2; 0.4]; second part; third part"}
    out = cards.card_html(rec, bib=BIB)
    head = re.search(r'<div class="mclib-card-head">(.*?)</div>', out).group(1)
    assert 'mclib-badge mclib-badge-holds' in head and "C6" in head
    assert '<p class="mclib-card-why">first part [0.2; 0.4]</p>' in out
    details = re.search(r"<details[^>]*>(.*)</details>", out).group(1)
    for key in ("measured", "criterion"):
        assert html.escape(RECORD[key]) in details
    assert "third part" in details  # the whole reason, folded
    assert '<a href="../_static/claims/C6.json">' in out  # the published record, linked


def _records():
    base = {"preset": "smoke", "seed": 3, "device": "cpu", "chapter": "notebooks/b_internal_codes.ipynb"}
    return {"B2": {**base, "id": "B2", "status": "fails", "reason": "deep codes are not diverse; more"},
            "B1": {**base, "id": "B1", "status": "holds", "reason": "shallow codes are homogeneous"},
            "A1": {**base, "id": "A1", "status": "inconclusive", "reason": "x", "chapter": "notebooks/a1_real_paths.ipynb"}}


def test_build_scale_reads_the_chapters_preset_sections():
    b = cards.build_scale("b_internal_codes", "quick")
    assert b["architectures"] == ["cnn", "resnet8"] and b["dataset"].startswith("MNIST") and b["n_train"] == 4000
    assert cards.build_scale("a1_real_paths", "smoke")["architectures"] == ["cnn", "mlp"]  # arch + second_arch
    assert cards.build_scale("a1_real_paths", "smoke")["dataset"] == "scikit-learn 8×8 digits"
    assert set(cards.CHAPTERS) >= {nb.stem for nb in book.notebooks(ROOT)}  # every chapter has its setting


def test_summary_lists_the_chapters_claims_linked_to_their_cards_with_the_builds_scale():
    recs = {k: v for k, v in _records().items() if k.startswith("B")}
    page = _Parsed(cards.summary_html("b_internal_codes", recs, "smoke"))
    text = page.visible()
    assert text.index("B1") < text.index("B2")
    assert ("a", {"class": "mclib-summary-id", "href": "#claim-b1"}) in page.tags
    assert "✔ holds shallow codes are homogeneous" in text and "✘ fails deep codes are not diverse" in text
    assert "more" not in text  # one line: the first clause only
    assert "scikit-learn 8×8 digits (256 train / 128 test images); cnn, resnet8; preset smoke, seed 3, cpu" in text
    assert "ResNet-18 and ResNet-50 on CIFAR-10" in text
    counts = _Parsed(cards.summary_html("report", _records(), "smoke", counts_only=True)).visible()
    assert "? inconclusive 1 of 3 claims" in counts and "✔ holds 1 of 3" in counts


def test_summary_box_goes_under_the_title_with_only_the_chapters_claims():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_markdown_cell("# Title\n\nOpening prose."),
                nbformat.v4.new_markdown_cell("## Later")]
    cards.add_summary(nb, "notebooks/b_internal_codes.ipynb", {"preset": "smoke", "seed": 3}, records=_records())
    assert [c.source[:12] for c in nb.cells] == ["x = 1", "# Title", '<div class="', "Opening pros", "## Later"]
    box = nb.cells[2]
    assert "mclib-summary-box" in box.metadata["tags"] and "B1" in box.source and "A1" not in box.source
    bare = nbformat.v4.new_notebook()
    bare.cells = [nbformat.v4.new_markdown_cell("# Only a title")]
    cards.add_summary(bare, "notebooks/own_model.ipynb", {"preset": "smoke"}, records=_records())
    assert len(bare.cells) == 2 and "records no claim" in bare.cells[1].source


# --- figures legible at 400 and 1400 px (issue 28) ---

def test_smallest_font_counts_visible_text_only():
    fig, ax = plt.subplots()
    ax.set_title("t", fontsize=14)
    ax.text(0.5, 0.5, "tiny", fontsize=5)
    ax.text(0.5, 0.2, "hidden", fontsize=3).set_visible(False)
    ax.text(0.5, 0.3, "   ", fontsize=2)
    ax.tick_params(labelsize=12)
    fig.canvas.draw()
    assert cards.smallest_font_pt(fig) == 5
    plt.close(fig)


@pytest.mark.parametrize("font_pt", [5.0, 10.0, 30.0])
def test_figure_records_its_font_and_the_widths_that_keep_it_legible(font_pt):
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot([0, 1], [0, 1])
    ax.tick_params(labelsize=font_pt)
    ax.set_xlabel("x", fontsize=font_pt + 2)
    out = cards.figure_html(fig, "A line.", "A rising line.", dpi=100)
    plt.close(fig)
    img = dict(_Parsed(out).tags)["img"]
    assert float(img["data-font-pt"]) == font_pt and img["data-dpi"] == "100"
    width = int(img["width"])
    widths = {int(k): int(v[:-2]) for k, v in re.findall(r"--mclib-w(\d+):([0-9]+px)", img["style"])}
    assert set(widths) == {9, 11}
    for px, w in widths.items():
        # the text as rendered at that width, from the PNG's size (an independent reading of the same geometry)
        natural = Image.open(io.BytesIO(base64.b64decode(img["src"].split(",", 1)[1]))).size[0]
        rendered = font_pt * 100 / 72 * w / natural
        assert w == width or rendered >= px - 1e-9, (px, w, rendered)
        assert w <= width
        assert w == width or font_pt * 100 / 72 * (w - 1) / natural < px  # the narrowest such width


def test_book_style_draws_no_text_below_ten_points():
    from mclib import plots

    with matplotlib.rc_context():
        plots.use_style()
        fig, ax = plots.subplots(1, 2)
        for a in ax:
            a.plot([0, 1], [1, 0], label="a line")
            a.set(title="title", xlabel="x", ylabel="y")
            a.legend()
        fig.suptitle("whole")
        fig.canvas.draw()
        assert cards.smallest_font_pt(fig) >= 10
        plt.close(fig)


def test_css_keeps_figures_at_their_legible_width_and_labels_stacked_cells():
    css = (ROOT / "book" / "_static" / "mclib.css").read_text()
    assert "min-width: var(--mclib-w11" in css and "min-width: var(--mclib-w9" in css
    assert "attr(data-label)" in css
    js = (ROOT / "book" / "_static" / "mclib.js").read_text()
    assert "dataset.label" in js and "mclib-zoomed" in js
