"""Self-contained HTML pages: one file, images embedded as data URIs, no scripts or network, opens offline.

Used by ``reglab report`` (studies), ``reglab sweep report`` and the analysis commands.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..train.checkpoint import atomic_write_text

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
     padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em} h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0} th,td{border:1px solid #ccc;padding:3px 7px}
th{background:#f3f3f3;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.3em 0} .muted{color:#777;font-size:.85em}
details{margin:.3em 0} pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.85em}
td.good{background:#e3f4e1;font-weight:600} td.bad{background:#fbe3e1;font-weight:600} td.none{color:#777}
"""
# Verdict words of the comparison and claims tables, and the class that colours their cell.
VERDICT_CLASSES = {
    "better": "good",
    "reproduced": "good",
    "worse": "bad",
    "contradicted": "bad",
    "no detectable difference": "none",
    "inconclusive": "none",
    "not run": "none",
}


def escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def embed_png(path: Path | str, alt: str = "") -> str:
    """An ``<img>`` whose PNG bytes are inlined as a base64 data URI."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{escape(alt or Path(path).stem)}" src="data:image/png;base64,{data}">'


def format_cell(value: Any) -> tuple[str, bool]:
    """Text of one table cell and whether it is numeric (right-aligned)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "", False
    if isinstance(value, bool):
        return str(value), False
    if isinstance(value, int):
        return f"{value:,}", True
    if isinstance(value, float):
        return (f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}"), True
    return str(value), False


def html_table(columns: Sequence[str], rows: Iterable[dict[str, Any] | Sequence[Any]], cls: str = "") -> str:
    """A ``<table>``: ``rows`` are mappings keyed by column name or sequences in column order."""
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        values = [row.get(c) for c in columns] if isinstance(row, dict) else list(row)
        cells = []
        for v in values:
            text, numeric = format_cell(v)
            cls_name = "num" if numeric else VERDICT_CLASSES.get(text)
            cells.append(f'<td class="{cls_name}">{escape(text)}</td>' if cls_name else f"<td>{escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cls_attr = f' class="{escape(cls)}"' if cls else ""
    return f"<table{cls_attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def details(summary: str, inner_html: str) -> str:
    """A collapsible block (``<details>``), e.g. one run's config."""
    return f"<details><summary>{escape(summary)}</summary>{inner_html}</details>"


def pre(text: str) -> str:
    return f"<pre>{escape(text)}</pre>"


def render_page(title: str, sections: Sequence[tuple[str, str]], subtitle: str = "") -> str:
    parts = [
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>',
        f"<style>{CSS}</style></head><body><h1>{escape(title)}</h1>",
    ]
    if subtitle:
        parts.append(f'<p class="muted">{escape(subtitle)}</p>')
    for heading, inner in sections:
        parts.append(f"<section><h2>{escape(heading)}</h2>{inner}</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_page(path: Path | str, title: str, sections: Sequence[tuple[str, str]], subtitle: str = "") -> Path:
    """Write a self-contained page; ``sections`` are (heading, inner HTML) pairs. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, render_page(title, sections, subtitle))
    return path
