"""A status view that updates while the lab waits: an updating HTML cell output in a notebook, a
line per change in a terminal; on a failure, the logs tail and the likely causes."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any, TextIO

from labkit.aicore.diagnosis import Cause
from labkit.aicore.results import _badge, _table


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class _Html:
    def __init__(self, html: str, text: str) -> None:
        self._html, self._text = html, text

    def _repr_html_(self) -> str:
        return self._html

    def __repr__(self) -> str:
        return self._text


class StatusView:
    """A live status: an updating HTML cell output in a notebook, a line per change elsewhere."""

    def __init__(
        self,
        title: str,
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
        live: bool | None = None,
    ) -> None:
        self.title = title
        self.enabled = enabled
        self.stream = stream
        self.live = _in_notebook() if live is None else live
        self._handle: Any = None
        self._last = ""

    def show(
        self, status: str, rows: Mapping[str, str], *, extra_html: str = "", extra_text: str = ""
    ) -> None:
        """Show ``status`` and ``rows`` (replacing what was shown before)."""
        if not self.enabled:
            return
        text = f"{self.title}: {status}  " + "  ".join(f"{k} {v}" for k, v in rows.items() if v)
        if self.live:
            html = (
                f"<b>{escape(self.title)}</b> {_badge(status)}"
                + _table({k: v for k, v in rows.items() if v})
                + extra_html
            )
            self._display(_Html(html, text + (("\n" + extra_text) if extra_text else "")))
            return
        line = f"{self.title}: {status}" + "".join(
            f"  {k} {v}" for k, v in rows.items() if v and k != "elapsed"
        )
        out = self.stream or sys.stderr
        if line != self._last:
            self._last = line
            elapsed = rows.get("elapsed", "")
            print(f"[{elapsed:>6}] {line}" if elapsed else line, file=out)
        if extra_text:
            print(extra_text, file=out)

    def _display(self, obj: _Html) -> None:
        from IPython.display import display

        if self._handle is None:
            self._handle = display(obj, display_id=True)
        else:
            self._handle.update(obj)

    def failure(
        self, status: str, rows: Mapping[str, str], logs: Sequence[str], causes: Sequence[Cause]
    ) -> None:
        """Show the logs tail and the likely causes of a failure."""
        causes_html = "".join(
            f"<li><b>{escape(c.summary)}</b>: {escape(c.advice)}<br><code>{escape(c.evidence)}"
            "</code></li>"
            for c in causes
        )
        html = (
            f"<p><b>Likely causes</b></p><ul>{causes_html}</ul>"
            if causes
            else "<p>No known cause in the logs.</p>"
        )
        if logs:
            html += (
                f"<details open><summary>last {len(logs)} log lines</summary><pre>"
                + escape("\n".join(logs))
                + "</pre></details>"
            )
        text = "\n".join(
            ["likely causes:" if causes else "no known cause in the logs"]
            + [f"  - {c.summary}: {c.advice}\n      {c.evidence}" for c in causes]
            + ([f"last {len(logs)} log lines:"] + [f"  {line}" for line in logs] if logs else [])
        )
        self.show(status, rows, extra_html=html, extra_text=text)


def _elapsed(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
