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
import re
from pathlib import Path
from typing import Any, Mapping

from mclib import _optional, config

#: The verdicts a card can show, with the symbol its badge carries (the colour is never the only cue).
BADGES = {"holds": "✔", "fails": "✘", "inconclusive": "?", "not run": "–"}

#: Pixels per inch of figure size on the page: a 6.4-inch figure is 640 CSS pixels wide (then scaled to
#: the text column), drawn at ``dpi`` pixels per inch so it stays sharp on high-density screens.
CSS_PX_PER_INCH = 100

_figure_numbers = itertools.count(1)


def status_of(record: Mapping[str, Any]) -> str:
    """The record's verdict: its ``status``, or ``holds``/``fails`` from an older boolean ``holds`` field."""
    status = record.get("status")
    if status is None and isinstance(record.get("holds"), bool):
        status = "holds" if record["holds"] else "fails"
    status = status or "not run"
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


def card_html(record: Mapping[str, Any], bib: Mapping[str, tuple[str, str]] | None = None) -> str:
    """One claim record as an HTML card (every field escaped; missing fields are left out).

    Keys read: ``id``, ``statement``, ``paper_value`` (or the older ``paper``), ``cite``, ``criterion``,
    ``measured``, ``status`` (or the older boolean ``holds``), ``reason``. ``values`` is not shown: the card
    names the JSON file that keeps it.
    """
    if not isinstance(record, Mapping):
        raise TypeError(f"record must be a mapping (a claim record dict), got {type(record).__name__}")
    status = status_of(record)
    cid = str(record.get("id", "?"))
    esc = lambda key: html.escape(str(record[key])) if record.get(key) not in (None, "") else ""  # noqa: E731
    paper = esc("paper_value") or esc("paper")
    cite = citation_html(record.get("cite"), bib)
    rows = [("Paper", " ".join(p for p in (paper, f"({cite})" if cite else "") if p)),
            ("Measured", esc("measured")),
            ("Criterion", esc("criterion")),
            ("Verdict", " ".join(p for p in (badge_html(status), esc("reason")) if p))]
    body = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows if value)
    return (f'<div class="mclib-card mclib-card-{status.replace(" ", "-")}" id="claim-{html.escape(cid.lower())}">'
            f'<div class="mclib-card-head"><span class="mclib-card-id">{html.escape(cid)}</span> '
            f'<span class="mclib-card-statement">{esc("statement")}</span></div>'
            f"<dl>{body}</dl>"
            f'<div class="mclib-card-foot">raw values: <code>claims/{html.escape(cid)}.json</code></div></div>')


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
    data = buf.getvalue()
    mime = "image/svg+xml" if fmt == "svg" else "image/png"
    src = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    # the PNG's pixel width (big-endian at bytes 16..20 of its IHDR chunk) at CSS_PX_PER_INCH, not dpi;
    # an SVG states its own size
    size = f' width="{round(int.from_bytes(data[16:20], "big") * CSS_PX_PER_INCH / dpi)}"' if fmt == "png" else ""
    label = f'<span class="caption-number">Figure {number}.</span> ' if number is not None else ""
    anchor = f' id="figure-{number}"' if number is not None else ""
    return (f'<figure class="mclib-figure"{anchor}>'
            f'<img src="{src}" alt="{html.escape(alt.strip(), quote=True)}"{size} '
            f'style="max-width:100%;height:auto">'
            f"<figcaption>{label}{html.escape(caption.strip())}</figcaption></figure>")


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
