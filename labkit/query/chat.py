"""The chat box: a text box and the streamed answer under it (ipywidgets)."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from labkit.query.client import Client
from labkit.query.common import QueryError
from labkit.query.results import Answer, _fmt_s

# --- the chat box --------------------------------------------------------------------------------


class ChatBox:
    """A text box and a streamed answer under it; ``ask(question)`` does what pressing Enter does."""

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
        self.reply = w.Textarea(
            value="", disabled=True, layout=w.Layout(width="95%", height="10em")
        )
        self.status = w.HTML(value=f"<small>{escape(client.base_url)}</small>")
        self.widget = w.VBox([w.HBox([self.question, self.button]), self.reply, self.status])
        self._asking = False
        # Enter (or leaving the box) sets the value; code setting it in ask() must not re-ask.
        self.question.continuous_update = False
        self.question.observe(self._on_submit, names="value")
        self.button.on_click(lambda _b: self._ask_box())

    def _on_submit(self, change: Mapping[str, Any]) -> None:
        if change.get("new") and not self._asking:
            self._ask_box()

    def _ask_box(self) -> None:
        if self.question.value.strip():
            try:
                self.ask(self.question.value)
            except QueryError as exc:  # shown in the box; the notebook's own cells raise for real
                self.status.value = f"<small style='color:#c62828'>{escape(str(exc))}</small>"

    def ask(self, question: str) -> Answer:
        """Stream the answer to ``question`` into the box; return it with its timing."""
        self._asking = True
        try:
            self.question.value = question
            self.reply.value = ""
            self.status.value = "<small>…</small>"
            stream = self.client.stream_chat(
                question, max_tokens=self.max_tokens, system=self.system
            )
            for delta in stream:
                self.reply.value += delta
        finally:
            self._asking = False
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
