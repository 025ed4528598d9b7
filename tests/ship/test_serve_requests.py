"""The served student's front (`p2m serve`, `build_app`): a malformed request is a 400 that says why,
in OpenAI's error shape, never a 500."""

from __future__ import annotations

import json

import pytest
from p2m.tasks.student.runtime import Answer

NAME = "p2m-test"


class EchoStudent:
    """A student that answers its input upper-cased (no model needed to test the HTTP layer)."""

    def predict(self, text: str) -> Answer:
        return Answer(text.upper(), len(text), len(text))


@pytest.fixture(scope="module")
def http():
    from fastapi.testclient import TestClient
    from p2m.tasks.ship.serve import build_app

    with TestClient(build_app(EchoStudent(), NAME, parallel=2), raise_server_exceptions=False) as client:
        yield client


def user(content) -> dict:
    return {"model": NAME, "messages": [{"role": "user", "content": content}]}


MALFORMED = [
    # (case, the body: a JSON value, or raw bytes sent as they are)
    ("a list", [1, 2]),
    ("a string", "hello"),
    ("null", None),
    ("a number", 42),
    ("messages a string", {"model": NAME, "messages": "hello"}),
    ("messages of numbers", {"model": NAME, "messages": [1, 2]}),
    ("messages empty", {"model": NAME, "messages": []}),
    ("messages missing", {"model": NAME}),
    ("messages an object", {"model": NAME, "messages": {"role": "user", "content": "hi"}}),
    ("message without role", {"model": NAME, "messages": [{"content": "hi"}]}),
    ("role a number", {"model": NAME, "messages": [{"role": 1, "content": "hi"}]}),
    ("content a number", user(5)),
    ("content an object", user({"text": "hi"})),
    ("user content null", user(None)),
    ("content parts of numbers", user([1, 2])),
    ("content part of another type", user([{"type": "image_url", "image_url": {"url": "http://x/a.png"}}])),
    ("content part text not a string", user([{"type": "text", "text": 3}])),
    ("model a list", {"model": [NAME], "messages": [{"role": "user", "content": "hi"}]}),
    ("model missing", {"messages": [{"role": "user", "content": "hi"}]}),
    ("max_tokens a string", user("hi") | {"max_tokens": "ten"}),
    ("max_tokens true", user("hi") | {"max_tokens": True}),
    ("temperature a string", user("hi") | {"temperature": "hot"}),
    ("lone surrogate", f'{{"model": "{NAME}", "messages": [{{"role": "user", "content": "\\ud800"}}]}}'.encode()),
    ("lone surrogate in a part", json.dumps(user([{"type": "text", "text": "\ud800"}])).encode()),
    ("not UTF-8", f'{{"model": "{NAME}", "messages": [{{"role": "user", "content": "'.encode() + b'\xff"}]}'),
    ("not JSON", b"{model: p2m"),
]


def test_malformed_requests_get_a_400_that_says_why_never_a_500(http):
    """26 malformed bodies (OpenAI's shape broken every way we know of): 0 answers of 5xx."""
    statuses = {}
    for case, body in MALFORMED:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        reply = http.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
        statuses[case] = reply.status_code
        assert reply.status_code == 400, (case, reply.status_code, reply.text)
        error = reply.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"], (case, error)
    assert len(statuses) >= 20 and not [c for c, s in statuses.items() if s >= 500]


@pytest.mark.parametrize(
    "body",
    [
        user("three"),
        user([{"type": "text", "text": "thr"}, {"type": "text", "text": "ee"}]),
        user("three") | {"max_tokens": 8, "temperature": 0.2},
        {
            "model": NAME,
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "assistant", "content": None},
                {"role": "user", "content": "three"},
            ],
        },
    ],
)
def test_well_formed_requests_are_answered(http, body):
    reply = http.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == "THREE"


def test_the_model_name_is_still_checked_after_the_shape(http):
    reply = http.post("/v1/chat/completions", json=user("hi") | {"model": "gpt-4"})
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "model_not_found"
