"""The chat box: a text box and the streamed answer under it (ipywidgets)."""

from __future__ import annotations

import warnings
from html import escape

from labkit.query.client import Client
from labkit.query.common import QueryError
from labkit.query.results import Answer, _fmt_s

# The answer's own panel: text in the page's colour (a disabled Textarea greys it out, which
# reads as placeholder text), wrapped, scrolling when long.
ANSWER_STYLE = (
    "white-space:pre-wrap;border:1px solid var(--jp-border-color1,#bbb);border-radius:4px;"
    "padding:6px 8px;min-height:4em;max-height:16em;overflow-y:auto;"
    "color:var(--jp-content-font-color1,#111)"
)
EMPTY_ANSWER = "<span style='opacity:.6'>(the answer appears here)</span>"


class ChatBox:
    """A text box and a streamed answer under it; ``ask(question)`` does what pressing Enter does.

    A question is sent once per Enter or click on "Ask", never when the text box merely loses
    the focus (with ``continuous_update=False`` it would: a click on "Ask" first blurs the box,
    which set its value and asked, then the click asked again)."""

    def __init__(self, client: Client, *, max_tokens: int = 256, system: str | None = None) -> None:
        import ipywidgets as w

        self.client = client
        self.max_tokens = max_tokens
        self.system = system
        self.answers: list[Answer] = []
        self.question = w.Text(
            placeholder="Ask the model and press Enter", layout=w.Layout(width="70%")
        )
        self.button = w.Button(description="Ask", button_style="primary")
        self.reply = w.HTML(value=self._panel(""), layout=w.Layout(width="95%"))
        self.status = w.HTML(value=f"<small>{escape(client.base_url)}</small>")
        self.widget = w.VBox([w.HBox([self.question, self.button]), self.reply, self.status])
        self.text = ""  # the answer streamed so far
        # Enter sends the front end's "submit" message, also for the same question again; the
        # value only mirrors what is typed. ipywidgets 8 marks on_submit deprecated in favour of
        # observing the value, which is exactly what asked twice.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.question.on_submit(lambda _box: self._ask_box())
        self.button.on_click(lambda _b: self._ask_box())

    @staticmethod
    def _panel(text: str) -> str:
        return f"<div class='labkit-answer' style='{ANSWER_STYLE}'>{escape(text) or EMPTY_ANSWER}</div>"

    def _ask_box(self) -> None:
        if self.question.value.strip():
            try:
                self.ask(self.question.value)
            except QueryError as exc:  # shown in the box; the notebook's own cells raise for real
                self.status.value = f"<small style='color:#c62828'>{escape(str(exc))}</small>"

    def ask(self, question: str) -> Answer:
        """Stream the answer to ``question`` into the box; return it with its timing."""
        self.question.value = question
        self.text = ""
        self.reply.value = self._panel("")
        self.status.value = "<small>…</small>"
        stream = self.client.stream_chat(question, max_tokens=self.max_tokens, system=self.system)
        for delta in stream:
            self.text += delta
            self.reply.value = self._panel(self.text)
        answer = stream.answer
        assert answer is not None
        self.answers.append(answer)
        self.status.value = (
            f"<small>{escape(answer.model)}: first token after {_fmt_s(answer.ttft_s)}, "
            f"{answer.completion_tokens} tokens in {_fmt_s(answer.seconds)}</small>"
        )
        return answer

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def chat_box(client: Client, *, max_tokens: int = 256, system: str | None = None) -> ChatBox:
    """A small chat box over ``client`` (ipywidgets): type, press Enter, watch the answer stream."""
    return ChatBox(client, max_tokens=max_tokens, system=system)
