"""The HTML tables the notebooks display (``_repr_html_``): one way to build them.

Cells are HTML already (callers escape text with ``esc`` and may wrap it in ``<code>``), so a
table can hold links and marks; ``align`` right-aligns numeric columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape as esc

__all__ = ["esc", "fields", "mark", "row", "table"]


def row(cells: Sequence[object], *, tag: str = "td", align: Sequence[str] | None = None) -> str:
    """One ``<tr>``; ``align[i]`` (``"right"``, ``"left"`` or ``""``) styles column ``i``."""
    out = []
    for i, cell in enumerate(cells):
        a = align[i] if align and i < len(align) else ""
        style = f" style='text-align:{a}'" if a else ""
        out.append(f"<{tag}{style}>{cell}</{tag}>")
    return f"<tr>{''.join(out)}</tr>"


def table(
    head: Sequence[object],
    rows: Iterable[Sequence[object]],
    *,
    align: Sequence[str] | None = None,
    sections: bool = False,
    after: str = "",
) -> str:
    """A ``<table>``: a header row of ``head``, then ``rows``; ``after`` is raw HTML for the end
    (a "... more" row). ``sections`` wraps them in ``<thead>``/``<tbody>``."""
    top = row(head, tag="th")
    body = "".join(row(r, align=align) for r in rows) + after
    if sections:
        return f"<table><thead>{top}</thead><tbody>{body}</tbody></table>"
    return f"<table>{top}{body}</table>"


def fields(pairs: Iterable[tuple[object, object]]) -> str:
    """A two-column table of named values: each name a left-aligned ``<th>``, each value a cell."""
    body = "".join(f"<tr><th style='text-align:left'>{k}</th><td>{v}</td></tr>" for k, v in pairs)
    return f"<table>{body}</table>"


def mark(ok: bool, yes: str = "ok", no: str = "failed") -> str:
    """A status cell: a sign and its word, so it reads without colour or emoji fonts."""
    return f"&#10004; {esc(yes)}" if ok else f"&#10008; {esc(no)}"
