"""The Python HTTP baseline: the echo model behind Starlette (and FastAPI).

Served by uvicorn with uvloop and httptools, the stack a FastAPI sidecar
would use. Both apps answer ``POST /v1/models/echo/execute`` with
the model's result as the JSON body, like the gateway.

    python3 -m uvicorn uvicorn_app:app --app-dir bench --loop uvloop --http httptools
    python3 -m uvicorn uvicorn_app:fastapi_app ...   (when fastapi is importable)
"""

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from _load_model import load_model

__all__ = ["app", "fastapi_app"]

_model = load_model(os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "echo.py"))


async def execute(request: Request) -> JSONResponse:
    msg = await request.json()
    return JSONResponse(_model.execute(msg))


app = Starlette(routes=[Route("/v1/models/echo/execute", execute, methods=["POST"])])

try:
    from fastapi import Body, FastAPI

    fastapi_app = FastAPI()

    @fastapi_app.post("/v1/models/echo/execute")
    async def fastapi_execute(msg: dict = Body(...)) -> dict:
        return _model.execute(msg)

except ImportError:  # FastAPI is optional: the scenario reports it as skipped
    fastapi_app = None
