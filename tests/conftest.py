from __future__ import annotations

from collections.abc import Iterator

import anyio
import httpx
import pytest
import respx

from baiduwx_async._sender import install_log_redaction

from .support import TOKEN_URL, token_body

pytest_plugins = ["tests.secret_guard", "tests.emulator_fixtures"]


@pytest.fixture(scope="session", autouse=True)
def _redact_httpx_logs() -> None:
    """Many tests talk to the emulator with plain httpx, which logs each URL (and its
    access token) at INFO. An `AsyncClient` switches the library's redaction of that
    logger on when it is built; switch it on for the whole run, so the secret guard does
    not depend on test order. test_client.py checks that the client does it by itself."""
    install_log_redaction()


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Core tests run under both event loops anyio supports."""
    return str(request.param)


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as mock:
        yield mock


@pytest.fixture
def token_route(router: respx.MockRouter) -> respx.Route:
    """The token endpoint, answering after a short delay as a real one would, so that
    concurrent first calls really do overlap the fetch."""

    async def answer(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0.01)
        return httpx.Response(200, json=token_body())

    return router.post(TOKEN_URL).mock(side_effect=answer)
