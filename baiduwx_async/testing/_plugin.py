"""The pytest plugin: the `wenxin_emulator` marker and fixtures, and the hook that runs the
async fixture in the runner of the test's plugin (the `baiduwx_async.testing` docstring
says how).

Registered through `baiduwx_async.testing`, which re-exports the hooks and fixtures: a
pytest11 entry point registers that module object, so they must be its attributes.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Mapping
from typing import Any

import pytest

from .._client import AsyncClient
from ._emulator import INSTANT_RETRIES, RunningEmulator, run_emulator

__all__ = [
    "pytest_addoption",
    "pytest_configure",
    "pytest_fixture_setup",
    "wenxin_client",
    "wenxin_emulator",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "wenxin_instant_retries",
        "clients of the wenxin_emulator fixture retry without waiting (same attempts), "
        "in every test, as @pytest.mark.wenxin_instant_retries does in one",
        type="bool",
        default=False,
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Register the markers; settle pytest-asyncio's fixture loop scope if left unset."""
    config.addinivalue_line(
        "markers",
        "wenxin_emulator(config=None, *, asgi=False, clock=None, **fields): settings of the "
        "wenxin_emulator fixture, as for baiduwx_async.testing.run_emulator()",
    )
    config.addinivalue_line(
        "markers",
        "wenxin_instant_retries: clients of the wenxin_emulator fixture (wenxin_client, "
        "wenxin_emulator.client()) retry without waiting: same attempts, no backoff",
    )
    _settle_asyncio_loop_scope(config)


def _settle_asyncio_loop_scope(config: pytest.Config) -> None:
    """pytest-asyncio (0.24 and later) warns at every run while its
    `asyncio_default_fixture_loop_scope` is unset. Our fixture follows the test's loop
    whatever the setting, so an unset one becomes "function", the value pytest-asyncio
    announces as its future default; a value the user set is left alone."""
    if not config.pluginmanager.has_plugin("asyncio"):
        return
    name = "asyncio_default_fixture_loop_scope"
    try:
        if config.getini(name):
            return
    except ValueError:  # an older pytest-asyncio without the setting
        return
    # pytest has no public way to set an ini value; its cache of them is what getini reads
    # (a private attribute: should a pytest drop it, the warning comes back, nothing breaks).
    cache = getattr(config, "_inicache", None)
    if isinstance(cache, dict):
        cache[name] = "function"


def _instant_retries(request: pytest.FixtureRequest) -> bool:
    return request.node.get_closest_marker("wenxin_instant_retries") is not None or bool(
        request.config.getini("wenxin_instant_retries")
    )


def _started(running: RunningEmulator, request: pytest.FixtureRequest) -> RunningEmulator:
    """The fixture's emulator, its clients set up as the test's markers ask."""
    if _instant_retries(request):
        running.client_defaults.setdefault("retry_policy", INSTANT_RETRIES)
    return running


def _fixture_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """`run_emulator` keywords from the markers (the closest wins) and the parameter."""
    settings: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("wenxin_emulator"))):
        if len(marker.args) > 1:
            raise TypeError("@pytest.mark.wenxin_emulator takes one positional EmulatorConfig")
        if marker.args:
            settings["config"] = marker.args[0]
        settings.update(marker.kwargs)
    param = getattr(request, "param", None)
    if param is not None:
        if isinstance(param, Mapping):
            settings.update(param)
        else:
            settings["config"] = param
    return settings


async def _wenxin_emulator(
    request: pytest.FixtureRequest,
) -> AsyncGenerator[RunningEmulator, None]:
    """A running emulator (`RunningEmulator`) on a free 127.0.0.1 port.

    Configure it with `@pytest.mark.wenxin_emulator(qps=5, ...)` or an indirect
    parametrization; `asgi=True` serves it without a socket (needed under trio).
    Async: use it from tests run by pytest-asyncio or anyio.
    """
    async with run_emulator(**_fixture_settings(request)) as running:
        yield _started(running, request)


# Ours to route (see pytest_fixture_setup); marked so that pytest-asyncio in strict mode
# accepts it in its tests without a deprecation warning.
_wenxin_emulator._force_asyncio_fixture = True  # type: ignore[attr-defined]
wenxin_emulator = pytest.fixture(name="wenxin_emulator")(_wenxin_emulator)


@pytest.fixture(name="wenxin_client")
def wenxin_client(wenxin_emulator: RunningEmulator, request: pytest.FixtureRequest) -> AsyncClient:
    """An `AsyncClient` bound to `wenxin_emulator`, closed when the emulator stops.

    Indirectly parametrize it with a dict of `AsyncClient` keywords to change them.
    """
    param = getattr(request, "param", None)
    return wenxin_emulator.client(**dict(param or {}))


def _anyio_runner_fixture(request: pytest.FixtureRequest) -> Iterator[RunningEmulator]:
    """Runs the fixture in anyio's test runner (the task that runs the test)."""
    from anyio.pytest_plugin import extract_backend_and_options, get_runner

    backend, options = extract_backend_and_options(request.getfixturevalue("anyio_backend"))
    with get_runner(backend, options) as runner:
        yield from runner.run_asyncgen_fixture(_wenxin_emulator, {"request": request})


async def _asyncio_hosted_fixture(
    request: pytest.FixtureRequest,
) -> AsyncIterator[RunningEmulator]:
    """For pytest-asyncio: the emulator lives in a task of its own from setup to teardown."""
    import asyncio

    loop = asyncio.get_running_loop()
    started: asyncio.Future[RunningEmulator] = loop.create_future()
    stop = asyncio.Event()

    async def host() -> None:
        try:
            async with run_emulator(**_fixture_settings(request)) as running:
                started.set_result(_started(running, request))
                await stop.wait()
        except Exception as exc:
            if started.done():
                raise
            started.set_exception(exc)
        except BaseException:
            if not started.done():
                started.cancel()
            raise

    task = loop.create_task(host(), name="wenxin_emulator")
    try:
        running = await started
    except BaseException:
        stop.set()
        with contextlib.suppress(BaseException):
            await task
        raise
    try:
        yield running
    finally:
        stop.set()
        await task


def _asyncio_fixture_in(loop_scope: str) -> Callable[..., AsyncIterator[RunningEmulator]]:
    fixture = _ASYNCIO_FIXTURES.get(loop_scope)
    if fixture is None:

        async def fixture(request: pytest.FixtureRequest) -> AsyncIterator[RunningEmulator]:
            async for running in _asyncio_hosted_fixture(request):
                yield running

        fixture._force_asyncio_fixture = True  # type: ignore[attr-defined]
        fixture._loop_scope = loop_scope  # type: ignore[attr-defined]
        _ASYNCIO_FIXTURES[loop_scope] = fixture
    return fixture


_ASYNCIO_FIXTURES: dict[str, Callable[..., AsyncIterator[RunningEmulator]]] = {}


def _unsupported_fixture(request: pytest.FixtureRequest) -> RunningEmulator:
    pytest.fail(
        f"{request.node.name}: the wenxin_emulator fixture (and wenxin_client) serves the "
        "emulator in the test's event loop, so it needs an async test run by pytest-asyncio "
        "(@pytest.mark.asyncio, or asyncio_mode = auto) or by anyio (@pytest.mark.anyio); "
        "outside one, use `async with baiduwx_async.testing.run_emulator()` yourself",
        pytrace=False,
    )


def _pytest_asyncio_loop_scope(request: pytest.FixtureRequest) -> str | None:
    """The loop scope of the test if pytest-asyncio runs it, else None."""
    if not request.config.pluginmanager.has_plugin("asyncio"):
        return None
    item = request.node
    marker = item.get_closest_marker("asyncio")
    if marker is None or not isinstance(item, pytest.Function):
        return None
    try:
        from pytest_asyncio import is_async_test
    except ImportError:  # pragma: no cover - older pytest-asyncio
        if not inspect.iscoroutinefunction(item.obj):
            return None
    else:
        if not is_async_test(item):
            return None
    scope = marker.kwargs.get("loop_scope") or marker.kwargs.get("scope")
    if scope is None:
        try:
            scope = request.config.getini("asyncio_default_test_loop_scope")
        except ValueError:  # pragma: no cover - older pytest-asyncio
            scope = None
    return str(scope or "function")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, object, object]:
    """Run `wenxin_emulator` in the runner of the test's plugin (see `baiduwx_async.testing`)."""
    if fixturedef.func is not _wenxin_emulator:
        return (yield)
    runner: Callable[..., Any]
    if "anyio_backend" in request.fixturenames:
        runner = _anyio_runner_fixture
    else:
        loop_scope = _pytest_asyncio_loop_scope(request)
        runner = _unsupported_fixture if loop_scope is None else _asyncio_fixture_in(loop_scope)
    original = fixturedef.func
    fixturedef.func = runner  # type: ignore[misc]
    try:
        return (yield)
    finally:
        fixturedef.func = original  # type: ignore[misc]
