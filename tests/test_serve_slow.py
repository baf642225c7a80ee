"""End to end on the real SmolLM2-135M: the Python API, the task endpoint and the
official openai client against the chat template of the bare model."""

from __future__ import annotations

import pytest
from serve_helpers import running_server

from stepdistill.config import TrainConfig
from stepdistill.models import StudentError, resolve_student
from stepdistill.run_folder import save_run_files
from stepdistill.serve import ServeSettings
from stepdistill.student import Student
from stepdistill.tasks import load_task

QUESTION = "Luke scored 84 points after playing 2 rounds of a trivia game. How many points did he score per round?"


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    try:
        model = resolve_student("smollm2-135m")
    except StudentError as error:
        pytest.skip(str(error))
    run = tmp_path_factory.mktemp("smollm2") / "run"
    run.mkdir()
    (run / "model").symlink_to(
        model, target_is_directory=True
    )  # the untrained student, served as a run
    save_run_files(
        run,
        TrainConfig(task="svamp", student="smollm2-135m", max_rationale_tokens=24),
        load_task("svamp"),
    )
    return model, run


@pytest.mark.slow
def test_smollm2_run_and_bare_model_over_http(smollm2):
    openai = pytest.importorskip("openai")
    model, run = smollm2
    student = Student.load(run, threads=1)
    direct = student.predict([QUESTION], rationale=True)[0]
    assert direct.raw and direct.rationale
    with running_server(student, ServeSettings(api_key="k")) as live:
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="k", max_retries=0)
        reply = client.chat.completions.create(
            model="run", messages=[{"role": "user", "content": QUESTION}]
        )
        assert reply.choices[0].message.content == (direct.label or direct.raw)
    bare = Student.load(model, threads=1)
    with running_server(bare, ServeSettings()) as live:
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)
        messages = [
            {"role": "user", "content": "What is the capital of France? Answer in one word."}
        ]
        reply = client.chat.completions.create(
            model="smollm2-135m", messages=messages, max_tokens=8
        )
        text = reply.choices[0].message.content
        assert "paris" in text.lower()
        streamed = client.chat.completions.create(
            model="smollm2-135m", messages=messages, max_tokens=8, stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == text
