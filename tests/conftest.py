from __future__ import annotations

from collections.abc import Iterator

import anyio
import httpx
import pytest
import respx

from .support import TOKEN_URL, token_body

pytest_plugins = ["tests.secret_guard", "tests.emulator_fixtures"]


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


@pytest.fixture
def http_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The HTTP backend of a socket test (see tests/integration_support.py)."""
    from .integration_support import CLIENT_DEFAULTS

    backend: str = getattr(request, "param", "httpx")
    monkeypatch.setitem(CLIENT_DEFAULTS, "http_backend", backend)
    return backend
