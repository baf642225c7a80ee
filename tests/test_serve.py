"""The server over real HTTP on loopback: the task endpoint, the OpenAI-compatible API
(through the official ``openai`` client), auth, bad bodies and concurrent clients."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
from serve_helpers import running_server

from stepdistill.serve import ServeSettings
from stepdistill.student import Student

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
INPUTS = [f"premise: item {i}\nhypothesis: {'x' * i}" for i in range(12)]


@pytest.fixture(scope="module")
def expected(tiny_student):
    # Computed before any server runs: a Student is used by one thread at a time.
    return {
        text: p.as_dict()
        for text, p in zip(INPUTS, tiny_student.predict(INPUTS, rationale=True), strict=True)
    }


@pytest.fixture(scope="module")
def server(tiny_student, expected):
    settings = ServeSettings(
        api_key=KEY, max_body_bytes=20_000, max_input_chars=5_000, max_inputs=16, batch_wait_ms=30
    )
    with running_server(tiny_student, settings) as live:
        yield live


@pytest.fixture()
def url(server):
    return server.url


def post(url, path, body, headers=AUTH):
    return httpx.post(url + path, json=body, headers=headers, timeout=60)


def test_health_needs_no_key_and_models_lists_the_run(url):
    assert httpx.get(f"{url}/health").json() == {"status": "ok", "model": "run"}
    models = httpx.get(f"{url}/v1/models", headers=AUTH).json()
    assert [m["id"] for m in models["data"]] == ["run"]


def test_predict_matches_the_python_api(url, expected):
    response = post(url, "/v1/predict", {"inputs": INPUTS[:3], "rationale": True})
    assert response.status_code == 200
    assert response.json()["predictions"] == [expected[text] for text in INPUTS[:3]]
    labels = post(url, "/v1/predict", {"inputs": INPUTS[:2]}).json()["predictions"]
    assert labels == [
        {"label": expected[t]["label"], "raw": expected[t]["raw"]} for t in INPUTS[:2]
    ]
    record = {"premise": "item 0", "hypothesis": ""}  # the run's input template is applied
    assert (
        post(url, "/v1/predict", {"inputs": [record]}).json()["predictions"][0]["raw"]
        == expected[INPUTS[0]]["raw"]
    )


def test_openai_client_chat_and_completions(url, expected):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    label = expected[INPUTS[1]]["label"]
    reply = client.chat.completions.create(
        model="run",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": INPUTS[1]},
        ],
    )
    assert reply.choices[0].message.content == label and reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens > 0
    stream = client.chat.completions.create(
        model="any-name",
        messages=[{"role": "user", "content": INPUTS[1]}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == label
    assert chunks[-1].usage.total_tokens > 0
    completion = client.completions.create(model="run", prompt=[INPUTS[2], INPUTS[3]])
    assert [c.text for c in completion.choices] == [
        expected[INPUTS[2]]["label"],
        expected[INPUTS[3]]["label"],
    ]
    streamed = client.completions.create(model="run", prompt=INPUTS[2], stream=True)
    assert "".join(c.choices[0].text for c in streamed) == expected[INPUTS[2]]["label"]


def test_sse_wire_format_ends_with_done(url):
    with httpx.stream(
        "POST",
        f"{url}/v1/chat/completions",
        headers=AUTH,
        timeout=60,
        json={"model": "run", "messages": [{"role": "user", "content": "hi"}], "stream": True},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events) and events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["choices"][0]["delta"]["role"] == "assistant"


@pytest.mark.parametrize(
    "path",
    ["/v1/models", "/v1/predict", "/v1/chat/completions", "/v1/completions", "/docs", "/nowhere"],
)
@pytest.mark.parametrize(
    "headers, message",
    [
        ({}, "missing API key"),
        ({"Authorization": "Bearer wrong"}, "invalid API key"),
        ({"Authorization": KEY}, "missing API key"),
    ],
)
def test_every_route_but_health_needs_the_key(url, path, headers, message):
    response = httpx.post(url + path, json={"inputs": ["a"]}, headers=headers)
    assert response.status_code == 401 and message in response.json()["error"]["message"]
    assert response.headers["www-authenticate"] == "Bearer"


def test_the_openai_client_reports_a_wrong_key(url):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="invalid API key"):
        client.chat.completions.create(model="run", messages=[{"role": "user", "content": "hi"}])


@pytest.mark.parametrize(
    "path, content, status, message",
    [
        ("/v1/predict", "{not json", 400, "not valid JSON"),
        ("/v1/predict", "", 400, "body is empty"),
        ("/v1/predict", "[1, 2]", 400, "must be a JSON object"),
        ("/v1/predict", '{"inputs": "text"}', 400, "'inputs': Input should be a valid list"),
        ("/v1/predict", '{"inputs": []}', 400, "'inputs'"),
        ("/v1/predict", '{"inputs": [3]}', 400, "'inputs.0'"),
        ("/v1/predict", '{"input": ["a"]}', 400, "missing field 'inputs'"),
        ("/v1/predict", '{"inputs": ["a"], "rationale": "yes"}', 400, "'rationale'"),
        ("/v1/predict", '{"inputs": [{"premise": "p"}]}', 400, "missing field 'hypothesis'"),
        ("/v1/predict", json.dumps({"inputs": ["a"] * 17}), 400, "the limit is 16"),
        ("/v1/predict", json.dumps({"inputs": ["a" * 6000]}), 413, "the limit is 5000"),
        ("/v1/predict", json.dumps({"inputs": ["a" * 30_000]}), 413, "larger than 20000 bytes"),
        ("/v1/chat/completions", '{"model": "run"}', 400, "missing field 'messages'"),
        (
            "/v1/chat/completions",
            '{"model": "run", "messages": [{"role": "bot", "content": "hi"}]}',
            400,
            "'messages.0.role'",
        ),
        (
            "/v1/chat/completions",
            '{"model": "run", "messages": [{"role": "system", "content": "hi"}]}',
            400,
            "user message",
        ),
        (
            "/v1/chat/completions",
            '{"model": "run", "messages": [{"role": "user", "content": "hi"}], "n": 2}',
            400,
            "'n'",
        ),
        ("/v1/completions", '{"model": "run", "prompt": []}', 400, "prompt must not be empty"),
        ("/v1/completions", '{"prompt": "hi"}', 400, "missing field 'model'"),
    ],
)
def test_bad_bodies_get_a_clear_4xx(url, path, content, status, message):
    response = httpx.post(
        url + path, content=content, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]


ODD_BODIES = [
    None,
    1,
    "s",
    [],
    {},
    {"inputs": None},
    {"inputs": [None]},
    {"inputs": [[1]]},
    {"inputs": [{"premise": {"a": 1}, "hypothesis": 2}]},
    {"model": 1, "prompt": [1]},
    {"model": "r", "prompt": "p", "max_tokens": -1},
    {"model": "r", "prompt": "p", "stop": 5},
    {"model": "r", "messages": "hi"},
    {"model": "r", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
    {
        "model": "r",
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
        ],
    },
    {"model": "r", "messages": [{"role": "user"}], "temperature": 9},
    {"model": "r", "prompt": "p", "stream": "yes"},
]


@pytest.mark.parametrize("path", ["/v1/predict", "/v1/completions", "/v1/chat/completions"])
def test_odd_bodies_never_get_a_server_error(url, path):
    for body in ODD_BODIES:
        response = httpx.post(url + path, json=body, headers=AUTH, timeout=60)
        assert response.status_code < 500, (body, response.text)
        assert response.status_code == 200 or response.json()["error"]["message"]


def test_a_chunked_body_over_the_limit_is_refused(url):
    def body():
        yield b'{"inputs": ["'
        for _ in range(30):
            yield b"x" * 1000
        yield b'"]}'

    response = httpx.post(
        f"{url}/v1/predict", content=body(), headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_concurrent_clients_are_batched_and_all_answered_correctly(server, expected):
    url, calls_before = server.url, server.model_calls
    barrier = threading.Barrier(len(INPUTS))
    answers: dict[str, object] = {}

    def client(text):
        barrier.wait()  # all requests arrive together
        answers[text] = post(url, "/v1/predict", {"inputs": [text], "rationale": True}).json()[
            "predictions"
        ][0]

    threads = [threading.Thread(target=client, args=(text,)) for text in INPUTS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert answers == expected
    assert server.model_calls - calls_before < len(INPUTS)  # requests shared model calls


def test_without_batching_each_request_is_one_call(tiny_student, expected):
    with running_server(tiny_student, ServeSettings(dynamic_batching=False)) as live:
        results = [
            post(live.url, "/v1/predict", {"inputs": [text]}, headers={}).json()
            for text in INPUTS[:3]
        ]
        assert live.model_calls == 3
    assert [r["predictions"][0]["raw"] for r in results] == [expected[t]["raw"] for t in INPUTS[:3]]


def test_a_bare_model_folder_serves_plain_completions(tiny_seq2seq):
    student = Student.load(tiny_seq2seq)
    expected = student.complete(["hello there"], 5)
    with running_server(student, ServeSettings(max_tokens=8)) as live:
        base = live.url
        body = {"model": "m", "prompt": "hello there", "max_tokens": 5}
        reply = post(base, "/v1/completions", body, headers={}).json()
        assert reply["choices"][0]["text"] == expected[0]
        assert reply["choices"][0]["finish_reason"] in ("length", "stop")
        chat = post(
            base,
            "/v1/chat/completions",
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
            headers={},
        )
        assert (
            chat.status_code == 200 and chat.json()["choices"][0]["message"]["role"] == "assistant"
        )
        too_many = post(base, "/v1/completions", {**body, "max_tokens": 9}, headers={})
        assert too_many.status_code == 400 and "limit of 8" in too_many.json()["error"]["message"]


def test_a_model_failure_is_a_json_500_and_the_server_lives_on(tiny_student):
    class Broken:
        def __getattr__(self, name):
            return getattr(tiny_student, name)

        def predict(self, inputs, rationale=False):
            raise RuntimeError("boom")

    with running_server(Broken(), ServeSettings()) as live:
        response = post(live.url, "/v1/predict", {"inputs": ["a"]}, headers={})
        assert response.status_code == 500 and response.json()["error"]["type"] == "server_error"
        assert httpx.get(f"{live.url}/health").status_code == 200


@pytest.mark.parametrize("text", ["", " ", "a", " Paris.\n\nThe answer is: ", "x  y\tz\n"])
def test_stream_pieces_join_to_the_whole_text(text):
    from stepdistill.serve import pieces

    assert "".join(pieces(text)) == text


def test_stop_sequences_cut_the_answer():
    from stepdistill.serve import cut_at_stop

    assert cut_at_stop("Paris.\n\nQ: next", "length", ["\n\n", "Q:"]) == ("Paris.", "stop")
    assert cut_at_stop("Paris.", "length", None) == ("Paris.", "length")
