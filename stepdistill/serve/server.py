"""``stepdistill serve``: load a student and run the app under uvicorn until interrupted."""

from __future__ import annotations

import os
from pathlib import Path

from ..student import Student
from .app import create_app
from .guard import LOOPBACK, uvicorn_config
from .settings import API_KEY_ENV, ServeSettings


def serve(
    path: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServeSettings | None = None,
    threads: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    int8: bool = False,
) -> None:
    """Load the student at ``path`` (on ``device``: see ``Student.load``) and serve it
    until interrupted."""
    import uvicorn

    settings = settings or ServeSettings()
    if settings.api_key is None:
        settings.api_key = os.environ.get(API_KEY_ENV) or None
    if host not in LOOPBACK and not settings.api_key:
        if not settings.allow_public_without_key:
            raise ValueError(
                f"refusing to serve on {host} without an API key: anyone who can reach it could "
                f"use it. Set ${API_KEY_ENV} (or pass --allow-public-without-key)"
            )
        print(
            f"warning: serving on {host} without an API key: anyone who can reach it can use it",
            flush=True,
        )
    student = Student.load(path, threads=threads, batch_size=batch_size, device=device, int8=int8)
    app = create_app(student, settings)
    name = settings.model_name or student.name
    print(
        f"serving {name} ({'run' if student.is_run else 'model'}) on http://{host}:{port}  (auth: {'on' if settings.api_key else 'off'})",
        flush=True,
    )
    uvicorn.Server(uvicorn_config(app, settings, host, port)).run()
