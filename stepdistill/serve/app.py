"""The FastAPI app: exception handlers, ``/health``, ``/v1/models``, the task endpoint
``/v1/predict``, and the OpenAI-compatible routes (``openai_api.py``)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..data import DataError
from ..student import Student
from .errors import ApiError, describe_validation, error_response
from .guard import Guard
from .jobs import Jobs
from .openai_api import add_openai_routes
from .settings import ServeSettings


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: list[str | dict[str, Any]] = Field(min_length=1)
    """Formatted texts or records of the task's fields."""
    rationale: StrictBool = False


def create_app(student: Student, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app serving ``student`` (its worker thread starts now, stops at shutdown)."""
    settings = settings or ServeSettings()
    name = settings.model_name or student.name
    jobs = Jobs(student, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        jobs.batcher.close()

    app = FastAPI(title="stepdistill student", lifespan=lifespan)
    app.state.batcher = jobs.batcher
    app.state.student = student
    app.add_middleware(
        Guard,
        api_key=settings.api_key,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
    )
    add_error_handlers(app)
    add_task_routes(app, jobs, name)
    add_openai_routes(app, jobs, name)
    return app


def add_error_handlers(app: FastAPI) -> None:
    """Every error, ours or the framework's, as an OpenAI-style JSON body."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.message, error.kind, error.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(400, describe_validation(error.errors()))

    @app.exception_handler(Exception)
    async def _crash(_: Request, error: Exception) -> JSONResponse:
        # A bug or a model failure: still an OpenAI-style body, and the server keeps running.
        return error_response(
            500, f"internal error ({type(error).__name__}); see the server log", "server_error"
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return error_response(
            error.status_code,
            str(error.detail),
            "not_found_error" if error.status_code == 404 else "invalid_request_error",
        )


def add_task_routes(app: FastAPI, jobs: Jobs, name: str) -> None:
    """``/health`` (never needs the key), ``/v1/models`` and the task endpoint."""
    created = int(time.time())
    student = jobs.student

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": name}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": created, "owned_by": "stepdistill"}
            ],
        }

    @app.post("/v1/predict")
    async def predict(body: PredictRequest, request: Request) -> dict[str, Any]:
        try:
            texts = [student.format(item, f"inputs[{i}]") for i, item in enumerate(body.inputs)]
        except DataError as error:
            raise ApiError(400, str(error), param="inputs") from None
        jobs.check_length(texts, "input")
        if body.rationale:
            try:
                student.check_rationale()
            except ValueError as error:
                raise ApiError(400, str(error), param="rationale") from None
        predictions = await jobs.run("predict", body.rationale, texts, request)
        return {"model": name, "predictions": [p.as_dict() for p in predictions]}
