"""What a chapter page shows a reader: a claim card per claim and numbered, captioned figures.

Both are plain HTML (rendered by the book, by Jupyter, by Colab alike), built by pure functions:

- :func:`card_html` turns one claim record -- the dict :func:`mclib.claims.core.record` writes to
  ``<build>/claims/<id>.json`` -- into a card: the statement, the paper's value and its citation, the
  measured value, the criterion, a verdict badge (*holds*, *fails*, *inconclusive*) and the reason. The raw
  ``values`` stay in the JSON file; the card only names it. :class:`Card` wraps it for ``display``.
- :func:`figure_html` turns a matplotlib figure into ``<figure>`` with a high-dpi PNG, its alt text and a
  numbered ``<figcaption>``; :func:`figure` displays it and closes the figure, so the notebook's inline
  backend does not draw it a second time and no ``Text(...)`` or ``Figure(...)`` repr reaches the page.

The styles (``mclib-card``, ``mclib-badge-*``, ``mclib-figure``) live in ``book/_static/mclib.css``.
"""
from __future__ import annotations

import base64
import functools
import html
import io
import itertools
import math
import re
from pathlib import Path
from typing import Any, Mapping

from mclib import _optional, claims, config
from mclib.claims.core import BADGES  # the verdicts a card can show and their symbols (colour is never the only cue)

#: Pixels per inch of figure size on the page: a 6.4-inch figure is 640 CSS pixels wide (then scaled to
#: the text column), drawn at ``dpi`` pixels per inch so it stays sharp on high-density screens.
CSS_PX_PER_INCH = 100

_figure_numbers = itertools.count(1)


def status_of(record: Mapping[str, Any]) -> str:
    """The record's verdict, its ``status`` (``not run`` when it has none)."""
    status = record.get("status") or "not run"
    if status not in BADGES:
        raise ValueError(f"record {record.get('id', '?')!r} has status {status!r}; allowed: {', '.join(BADGES)}")
    return status


def badge_html(status: str) -> str:
    """The verdict badge: a coloured pill with a symbol and the word (``mclib-badge-<status>``)."""
    if status not in BADGES:
        raise ValueError(f"status must be one of {', '.join(BADGES)}, got {status!r}")
    css = status.replace(" ", "-")
    return f'<span class="mclib-badge mclib-badge-{css}">{BADGES[status]} {status}</span>'


@functools.lru_cache(maxsize=4)
def _bibliography(path: str) -> dict[str, tuple[str, str]]:
    """bibtex key -> (short author-year label, link) from ``path`` (empty if the file is missing)."""
    if not Path(path).exists():
        return {}
    _optional.require_book("mclib.cards' citations", ["pybtex"])
    from pybtex.database import parse_file

    out = {}
    for key, entry in parse_file(path).entries.items():
        lasts = [" ".join(p.last_names).replace("{", "").replace("}", "") for p in entry.persons.get("author", [])]
        # the author-year style of the book's citations: "Lee & Vijayan 2024", "Vrabel et al. 2025"
        names = lasts[0] + " et al." if len(lasts) > 2 else " & ".join(lasts) or key
        f = entry.fields
        label = f"{names} {f.get('year', '')}".rstrip()
        link = (f.get("url") or (f"https://arxiv.org/abs/{f['eprint']}" if "eprint" in f else "")
                or (f"https://doi.org/{f['doi']}" if "doi" in f else ""))
        out[key] = (label, link)
    return out


def citation_html(key: str | None, bib: Mapping[str, tuple[str, str]] | None = None) -> str:
    """A citation: "Vrabel et al. 2025" linked to the paper's page when ``key`` is in the book's bibliography.

    ``bib`` maps key -> (label, link); by default it is read from ``book/references.bib``. An unknown key is
    shown as it is, so a card never hides where its number comes from.
    """
    if not key:
        return ""
    if bib is None:
        root = config.REPO_ROOT or Path.cwd()
        bib = _bibliography(str(Path(root) / "book" / "references.bib"))
    label, link = bib.get(key, (key, ""))
    text = html.escape(label)
    return f'<a class="mclib-cite" href="{html.escape(link, quote=True)}">{text}</a>' if link else \
        f'<span class="mclib-cite">{text}</span>'


def one_line(reason: str | None) -> str:
    """The first clause of a verdict's reason: up to the first ``"; "`` outside brackets (the judges join one
    part per model or setting that way), the whole reason when it has one part."""
    text = " ".join(str(reason or "").split())
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch in "[(") - (ch in "])")
        if depth == 0 and text.startswith("; ", i):
            return text[:i]
    return text


#: Where the claim records are published with the book, relative to a chapter page (see mclib.site).
CLAIMS_URL = "../_static/claims/{id}.json"


def card_html(record: Mapping[str, Any], bib: Mapping[str, tuple[str, str]] | None = None) -> str:
    """One claim record as an HTML card (every field escaped; missing fields are left out).

    The head carries the id, the verdict badge and the statement; below it one line of why (the first clause
    of the reason, :func:`one_line`); the numbers -- paper, measured, criterion and the whole reason -- are
    folded in ``<details>``. The foot links the published record (``_static/claims/<id>.json``).

    Keys read: ``id``, ``statement``, ``paper_value``, ``cite``, ``criterion``,
    ``measured``, ``status``, ``reason``. ``values`` is not shown: the card
    links the JSON file that keeps it.
    """
    if not isinstance(record, Mapping):
        raise TypeError(f"record must be a mapping (a claim record dict), got {type(record).__name__}")
    status = status_of(record)
    cid = str(record.get("id", "?"))
    esc = lambda key: html.escape(str(record[key])) if record.get(key) not in (None, "") else ""  # noqa: E731
    paper = esc("paper_value")
    cite = citation_html(record.get("cite"), bib)
    why = html.escape(one_line(record.get("reason")))
    rows = [("Paper", " ".join(p for p in (paper, f"({cite})" if cite else "") if p)),
            ("Measured", esc("measured")),
            ("Criterion", esc("criterion")),
            ("Verdict", esc("reason") if esc("reason") != why else "")]
    body = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows if value)
    more = (f'<details class="mclib-card-more"><summary>the numbers</summary><dl>{body}</dl></details>'
            if body else "")
    link = html.escape(CLAIMS_URL.format(id=cid), quote=True)
    return (f'<div class="mclib-card mclib-card-{status.replace(" ", "-")}" id="claim-{html.escape(cid.lower())}">'
            f'<div class="mclib-card-head"><span class="mclib-card-id">{html.escape(cid)}</span> '
            f'{badge_html(status)} <span class="mclib-card-statement">{esc("statement")}</span></div>'
            + (f'<p class="mclib-card-why">{why}</p>' if why else "") + more +
            f'<div class="mclib-card-foot">raw values: <a href="{link}">claims/{html.escape(cid)}.json</a></div></div>')


class Card:
    """A claim card for ``display``: HTML in the book and in Jupyter, one line of text in a terminal."""

    def __init__(self, record: Mapping[str, Any]):
        self.record = dict(record)
        status_of(self.record)  # a bad status fails here, where the notebook calls it

    def _repr_html_(self) -> str:
        return card_html(self.record)

    def __repr__(self) -> str:
        r = self.record
        return f"{r.get('id', '?')}: {status_of(r)} -- {r.get('reason') or r.get('measured') or ''}".rstrip(" -")


def figure_html(fig, caption: str, alt: str, number: int | None = None, dpi: int = 200,
                fmt: str = "png") -> str:
    """A matplotlib figure as ``<figure>``: the image (PNG at ``dpi`` or SVG), its alt text, its caption.

    The caption starts with "Figure ``number``." when a number is given. The image is as wide on the page as
    the saved figure at :data:`CSS_PX_PER_INCH`, never wider than the text column (the book's CSS).
    """
    for name, text in (("caption", caption), ("alt", alt)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{name} must be a non-empty sentence describing the figure, got {text!r}")
    if fmt not in ("png", "svg"):
        raise ValueError(f"fmt must be 'png' or 'svg', got {fmt!r}")
    if re.search(r"\.(png|svg|jpe?g|pdf)$", alt.strip(), re.I):
        raise ValueError(f"alt must describe what the figure shows, not name a file: {alt!r}")
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")
    font_pt = smallest_font_pt(fig)  # after drawing: tick labels get their text when drawn
    data = buf.getvalue()
    mime = "image/svg+xml" if fmt == "svg" else "image/png"
    src = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    # the PNG's pixel width (big-endian at bytes 16..20 of its IHDR chunk) at CSS_PX_PER_INCH, not dpi;
    # an SVG states its own size
    size, legible = "", ""
    if fmt == "png":
        width = round(int.from_bytes(data[16:20], "big") * CSS_PX_PER_INCH / dpi)
        size = f' width="{width}"'
        if font_pt:
            legible = "".join(f";--mclib-w{px}:{w}px" for px, w in legible_widths(width, font_pt).items())
    label = f'<span class="caption-number">Figure {number}.</span> ' if number is not None else ""
    anchor = f' id="figure-{number}"' if number is not None else ""
    font = f' data-font-pt="{font_pt:g}" data-dpi="{dpi}"' if font_pt else ""
    return (f'<figure class="mclib-figure"{anchor}>'
            f'<img src="{src}" alt="{html.escape(alt.strip(), quote=True)}"{size}{font} '
            f'style="max-width:100%;height:auto{legible}">'
            f"<figcaption>{label}{html.escape(caption.strip())}</figcaption></figure>")


#: The smallest text a reader should meet in a figure, in CSS pixels: on a phone (400 px) and a desktop.
LEGIBLE_PX = {"phone": 9, "desktop": 11}


def smallest_font_pt(fig) -> float | None:
    """The smallest font size (points) of the visible, non-empty text a figure draws; None if it has none.

    Call it on a drawn figure: tick labels get their text when the figure is drawn."""
    from matplotlib.text import Text

    sizes = [t.get_fontsize() for t in fig.findobj(Text)
             if t.get_visible() and t.get_text().strip() and (t.axes is None or t.axes.get_visible())]
    return float(min(sizes)) if sizes else None


def legible_widths(width_px: int, font_pt: float) -> dict[int, int]:
    """The narrowest display widths (CSS px) at which a figure ``width_px`` wide, whose smallest text is
    ``font_pt``, renders that text at :data:`LEGIBLE_PX` pixels: ``{9: w9, 11: w11}``, never above ``width_px``.

    At its own width a figure's text is ``font_pt * CSS_PX_PER_INCH / 72`` px tall; scaled to ``w`` px it is
    that times ``w / width_px``. The book's CSS keeps the image at least this wide (scrolling inside its
    ``<figure>`` where the column is narrower; a click opens it full size).
    """
    natural = font_pt * CSS_PX_PER_INCH / 72
    return {px: min(width_px, math.ceil(width_px * px / natural)) for px in LEGIBLE_PX.values()}


def figure(fig, caption: str, alt: str, number: int | None = None, dpi: int = 200, fmt: str = "png") -> None:
    """Display ``fig`` as the chapter's next numbered figure, with caption and alt text, and close it.

    Figures are numbered 1, 2, ... in the order a notebook shows them (one kernel per notebook), unless
    ``number`` is given. Returns nothing, so no repr is printed after the figure.
    """
    import matplotlib.pyplot as plt

    _optional.require_book("mclib.cards.figure", ["IPython"])
    from IPython.display import HTML, display

    number = next(_figure_numbers) if number is None else number
    out = figure_html(fig, caption, alt, number=number, dpi=dpi, fmt=fmt)
    plt.close(fig)
    display(HTML(out))


# --------------------------------------------------------------------------- the chapter's summary box
#: Per chapter (notebook stem): the preset sections (``mclib/presets/<section>.toml``) that name its
#: architectures, and the setting of the paper it reproduces (shown beside this build's).
CHAPTERS: dict[str, tuple[tuple[str, ...], str]] = {
    "a1_real_paths": (("paths",), "ImageNet images under GoogLeNet (Vrabel et al., section 4)"),
    "a4_interpolated_synthetic": (("paths",), "ImageNet images under GoogLeNet, interpolated and FVO inputs "
                                              "(Vrabel et al., section 4.1; qualitative)"),
    "a6_untrained": (("untrained",), "randomly initialised CNN and ResNet-18 on 3×32×32 inputs (Vrabel et al.)"),
    "a7_barrier_evolution": (("evolution",), "the first 30 batches of training (Adam, lr 1e-3, batch 512), "
                                             "10 classes × 5 FVO pairs (Vrabel et al.; qualitative)"),
    "a8_detection": (("detect",), "the paper's official data and models (Vrabel et al., section 4.4)"),
    "a10_percolation": (("percolation",), "site percolation on hypercubic lattices, d = 2..7 "
                                          "(Vrabel et al., section 5, Conjecture 5.1)"),
    "b_internal_codes": (("som",), "ResNet-18 and ResNet-50 on CIFAR-10 (Lee & Vijayan)"),
    "c1_curves": (("curves",), "VGG16 on CIFAR-10 (Zhao et al., quoting Garipov et al.)"),
    "c2_backdoor_repair": (("repair",), "VGG on CIFAR-10, 50 to 2,500 bonafide samples (Zhao et al., sec. 3.1)"),
    "c4_error_injection": (("repair",), "CIFAR-10, fault injection into one layer (Zhao et al., sec. 3.2)"),
    "c6_robustness_hessian": (("robustness",), "CIFAR-10, PGD L∞ ε = 8/255, three model pairs (Zhao et al., sec. 5)"),
    "c8_across_architectures": (("curves", "repair", "robustness"), "VGG and ResNet on CIFAR-10 and SVHN (Zhao et al.)"),
    "own_model": (("detect",), "a third-party CIFAR ResNet, as a reader would bring it"),
    "report": (("paths", "untrained", "evolution", "detect", "som", "curves", "repair", "robustness"),
               "ImageNet (paper A), CIFAR-10 (papers B and C), with ResNet, VGG and GoogLeNet models"),
}

#: How a dataset is named to a reader.
DATASETS = {"digits": "scikit-learn 8×8 digits", "mnist5k": "MNIST (a 5,000-digit subset)", "mnist": "MNIST",
            "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "svhn": "SVHN"}


def build_scale(stem: str, preset: str) -> dict[str, Any]:
    """This build's scale for chapter ``stem`` at ``preset``: dataset (with its train/test sizes) and the
    architectures its preset sections name (``archs``, ``arch``, ``map_archs``, ``second_arch``; the preset's
    ``arch`` where a section names none). Unknown chapters get the preset's dataset and architecture."""
    p = config.get_preset(preset)
    sections, _ = CHAPTERS.get(stem, ((), ""))
    archs: list[str] = []
    for name in sections:
        sec = p.section(name)
        found = [*sec.get("archs", []), *([sec["arch"]] if "arch" in sec else []), *sec.get("map_archs", [])]
        for arch in [*(found or [p.arch]), *([sec["second_arch"]] if "second_arch" in sec else [])]:
            if arch not in archs:
                archs.append(arch)
    return {"dataset": DATASETS.get(p.dataset, p.dataset), "n_train": p.n_train, "n_test": p.n_test,
            "architectures": archs or [p.arch], "preset": preset}


def scale_text(scale: Mapping[str, Any], seed: Any = None, device: Any = None) -> str:
    """``"scikit-learn 8×8 digits (256 train / 128 test images); cnn, mlp; preset smoke, seed 0, cpu"``."""
    run = ", ".join(p for p in (f"preset {scale['preset']}", f"seed {seed}" if seed is not None else "",
                                str(device) if device else "") if p)
    return (f"{scale['dataset']} ({scale['n_train']:,} train / {scale['n_test']:,} test images); "
            f"{', '.join(scale['architectures'])}; {run}")


def summary_html(stem: str, records: Mapping[str, Mapping[str, Any]], preset: str, seed: Any = None,
                 device: Any = None, counts_only: bool = False) -> str:
    """The box a chapter opens with: each claim's id (linked to its card), verdict badge and one-line reason,
    then "this build" (dataset, architectures, preset, seed, device) beside the paper's setting.

    ``records`` are the chapter's claim records by id; with ``counts_only`` (the report) the claims are
    counted by verdict instead of listed. Seed and device come from the records when they carry them.
    """
    recs = [records[k] for k in sorted(records, key=lambda c: (c[:1], int(c[1:]) if c[1:].isdigit() else 0))]
    seed = next((r["seed"] for r in recs if r.get("seed") is not None), seed)
    device = next((r["device"] for r in recs if r.get("device")), device)
    if counts_only:
        statuses = [status_of(r) for r in recs]
        items = "".join(f"<li>{badge_html(s)} <strong>{statuses.count(s)}</strong> of {len(recs)} claims</li>"
                        for s in ("holds", "fails", "inconclusive") if s in statuses)
    else:
        items = "".join(
            f'<li><a class="mclib-summary-id" href="#claim-{html.escape(str(r.get("id", "?")).lower(), quote=True)}">'
            f'{html.escape(str(r.get("id", "?")))}</a> {badge_html(status_of(r))} '
            f'<span class="mclib-summary-why">{html.escape(one_line(r.get("reason")))}</span></li>' for r in recs)
    claims_part = f'<ul class="mclib-summary-claims">{items}</ul>' if items else \
        '<p class="mclib-summary-none">This page records no claim.</p>'
    _, paper = CHAPTERS.get(stem, ((), ""))
    rows = [("This build", html.escape(scale_text(build_scale(stem, preset), seed, device))),
            ("The paper", html.escape(paper))]
    scale = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows if v)
    return (f'<div class="mclib-summary" role="note"><div class="mclib-summary-title">Verdicts and scale</div>'
            f'{claims_part}<dl class="mclib-summary-scale">{scale}</dl></div>')


def add_summary(executed, nb: str | Path, params: Mapping[str, Any], records: Mapping[str, Mapping] | None = None) -> None:
    """Put the summary box (:func:`summary_html`) under the title of an executed notebook (nbformat, in place).

    The first markdown cell is split after its ``#`` title, so the box comes before the opening prose.
    ``records`` defaults to the recorded claims (``mclib.claims.load_all()``) whose ``chapter`` is ``nb``; the
    report counts every claim.
    """
    import nbformat

    stem = Path(nb).stem
    if records is None:
        records = claims.load_all()
    mine = records if stem == "report" else {
        k: r for k, r in records.items() if str(r.get("chapter") or "").endswith(Path(nb).name)}
    box = nbformat.v4.new_markdown_cell(summary_html(stem, mine, params["preset"], params.get("seed"),
                                                     None, counts_only=stem == "report"))
    box.metadata["tags"] = ["mclib-summary-box"]
    first = next((i for i, c in enumerate(executed.cells) if c.cell_type == "markdown"), None)
    if first is None:
        executed.cells.insert(0, box)
        return
    lines = executed.cells[first].source.split("\n")
    if lines and lines[0].startswith("# ") and any(line.strip() for line in lines[1:]):
        executed.cells[first].source = lines[0]
        rest = nbformat.v4.new_markdown_cell("\n".join(lines[1:]).strip("\n"))
        executed.cells.insert(first + 1, rest)
    executed.cells.insert(first + 1, box)
