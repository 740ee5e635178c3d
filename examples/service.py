"""A web service that keeps one AsyncClient for its lifetime and streams a model's answer
to its own HTTP clients as server-sent events. When a browser goes away, the upstream
stream is cancelled and its connection closed at once.

    pip install 'baiduwx_async[emulator]'
    python examples/service.py            # serves http://127.0.0.1:8000
    curl -N -X POST localhost:8000/chat -d '{"messages": [{"role": "user", "content": "Hi"}]}'
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

import baiduwx_async as wx

ClientFactory = Callable[[], AbstractAsyncContextManager[wx.AsyncClient]]


def create_app(open_client: ClientFactory, endpoint: str = "mpt30b") -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_client() as client:  # one client, one connection pool, for the app
            app.state.client = client
            yield

    async def chat(request: Request) -> Response:
        body: Any = await request.json()
        client: wx.AsyncClient = request.app.state.client
        try:
            # checked here, before the response starts: a bad request gets a 400
            stream = client.chat_stream(endpoint, body.get("messages"))
        except wx.ValidationError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

        async def events() -> AsyncIterator[str]:
            # Starlette cancels this generator when the browser disconnects; leaving the
            # `async with` then closes the upstream stream.
            try:
                async with stream:
                    async for chunk in stream:
                        yield f"data: {json.dumps({'text': chunk.result}, ensure_ascii=False)}\n\n"
            except wx.WenxinError as exc:
                yield f"event: error\ndata: {json.dumps({'error': str(exc)})}\n\n"
                return
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/chat", chat, methods=["POST"])], lifespan=lifespan)


if __name__ == "__main__":
    import uvicorn
    from _connect import open_client as connect

    uvicorn.run(create_app(connect), host="127.0.0.1", port=8000)
