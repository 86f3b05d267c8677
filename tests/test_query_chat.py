"""The chat box sends exactly one request per question: per Enter or per click on "Ask"."""

from __future__ import annotations

from html import unescape

from labkit import query
from labkit.query.results import Answer


def press_enter(text_box) -> None:
    """What pressing Enter in an ipywidgets Text sends: the front end's "submit" message."""
    text_box._handle_string_msg(None, {"event": "submit"}, None)


class Stream:
    def __init__(self, question: str, words: list[str]) -> None:
        self.words = words
        self.answer = Answer("chat", question, "".join(words), "m", 0.5, ttft_s=0.1,
                             completion_tokens=len(words))  # fmt: skip

    def __iter__(self):
        yield from self.words


class CountingClient:
    """Answers every question with the same words; counts the requests."""

    base_url = "http://127.0.0.1:1/v1"

    def __init__(self) -> None:
        self.asked: list[str] = []

    def stream_chat(self, question: str, **_kwargs) -> Stream:
        self.asked.append(question)
        return Stream(question, ["Paris", " is", " <the> capital."])


def test_typing_then_clicking_ask_sends_the_question_once() -> None:
    client = CountingClient()
    box = query.chat_box(client)
    box.question.value = "What is the capital of France?"  # typed, then the box loses the focus
    box.button.click()
    assert client.asked == ["What is the capital of France?"]
    assert box.text == "Paris is <the> capital." and len(box.answers) == 1
    assert "Paris is &lt;the&gt; capital." in box.reply.value  # escaped, in the answer panel
    assert "first token after 100 ms" in box.status.value


def test_enter_asks_again_even_for_the_same_question() -> None:
    client = CountingClient()
    box = query.chat_box(client)
    box.question.value = "Why?"
    press_enter(box.question)
    press_enter(box.question)
    assert client.asked == ["Why?", "Why?"]


def test_an_empty_box_asks_nothing_and_the_answer_panel_is_not_a_disabled_input() -> None:
    client = CountingClient()
    box = query.chat_box(client)
    press_enter(box.question)
    box.button.click()
    assert client.asked == []
    assert "the answer appears here" in unescape(box.reply.value)
    assert not hasattr(box.reply, "disabled")  # an HTML panel, not a greyed-out Textarea
