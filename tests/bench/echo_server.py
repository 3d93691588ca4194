"""A small real HTTP server for load-client tests: speaks the OpenAI and whisper.cpp
transcription routes, answers with a fixed text after a delay, and can answer some requests with
an error status. Run: ``python echo_server.py --port P [--delay-s D] [--fail-every N --fail-status S]``.

It stands in for endpoints whose behaviour a test must control (slow answers, 429/500), where
``stenod serve`` would need a real model and could not be made to fail on demand.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools

import uvicorn
from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse


def create_app(*, text: str, delay_s: float, fail_every: int, fail_status: int) -> FastAPI:
    app = FastAPI()
    counter = itertools.count(1)
    seen = [0]

    async def answer(file: UploadFile) -> JSONResponse:
        n = next(counter)
        seen[0] = n
        await file.read()
        await asyncio.sleep(delay_s)
        if fail_every and n % fail_every == 0:
            return JSONResponse({"error": {"message": "injected failure"}}, status_code=fail_status)
        return JSONResponse({"text": text})

    @app.post("/v1/audio/transcriptions")
    async def openai_route(file: UploadFile = File(...), model: str | None = Form(None),
                           response_format: str | None = Form(None)) -> JSONResponse:
        return await answer(file)

    @app.post("/inference")
    async def whispercpp_route(file: UploadFile = File(...), response_format: str | None = Form(None),
                               temperature: float | None = Form(None)) -> JSONResponse:
        return await answer(file)

    @app.get("/ready")
    async def ready() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/requests")
    async def requests_seen() -> JSONResponse:
        return JSONResponse({"count": seen[0]})

    return app


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--text", default="And so, my fellow Americans, ask not what your country can do for you, "
                                      "ask what you can do for your country.")
    p.add_argument("--delay-s", type=float, default=0.0)
    p.add_argument("--fail-every", type=int, default=0)
    p.add_argument("--fail-status", type=int, default=500)
    a = p.parse_args()
    app = create_app(text=a.text, delay_s=a.delay_s, fail_every=a.fail_every, fail_status=a.fail_status)
    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning")


if __name__ == "__main__":
    main()
