"""The testing kit: a pytest plugin with emulator fixtures, `run_emulator()` and `mock_wenxin()`.

Not imported by `import baiduwx_async`; use `from baiduwx_async import testing`. Installed
as a pytest plugin (entry point `baiduwx_async`), so its fixtures need no `conftest.py`.
Importing it is cheap: the emulator (starlette, uvicorn) and respx are imported only by
the functions and fixtures that use them.

A real emulator, served on a free loopback port inside the running event loop::

    async with testing.run_emulator(qps=20, seed=1) as emu:
        async with emu.client() as client:          # base_url and credentials set
            reply = await client.chat("mpt30b", [wx.user("hi")])
        assert emu.stats()["endpoints"]["chat/mpt30b"] == {"ok": 1}

`run_emulator(asgi=True)` serves nothing: `emu.client()` then talks to the app through
`httpx.ASGITransport`, without sockets, under asyncio and trio alike (stream faults that
drop the connection become `ConnectionDropped`, and the whole answer is buffered).

Mocks, one line per answer, with protocol-shaped bodies (docs/protocol.md §4 and §5)::

    with testing.mock_wenxin() as mock:
        mock.chat("mpt30b", result="Hello!")
        mock.stream("mpt30b", ["Hel", "lo!"])      # the last one registered wins
        mock.error("pythia12b", 336003, kind="completions", times=1)   # then ...
        mock.complete("pythia12b", result="Beijing is ...")
        mock.embed("embedding-v1")                 # the emulator's vectors, or give your own
        mock.function_call("ernie-4.0-8k", "get_weather", {"location": "Beijing"})

Fixtures
--------
`wenxin_emulator` yields a `RunningEmulator` served on a real loopback socket; settings
come from a marker, `@pytest.mark.wenxin_emulator(qps=5, faults={"error_2": 0.3})`, or an
indirect parametrization, `@pytest.mark.parametrize("wenxin_emulator", [{"qps": 5}],
indirect=True)` (the parameter wins). `asgi=True` in either gives the socket-free mode.
`wenxin_client` is an `AsyncClient` bound to it (indirectly parametrize it with a dict of
`AsyncClient` keywords); it is closed when the emulator stops.

`@pytest.mark.wenxin_instant_retries` (or the ini option `wenxin_instant_retries = true`,
for every test) gives the fixture's clients `retry_policy=INSTANT_RETRIES`: the same
attempts, no waiting, so fault-injection tests do not pay the backoff (nor, unless the
test gives qps, rpm or rate_limiter, the client's slow-down after rate-limit answers). The
plugin also sets pytest-asyncio's `asyncio_default_fixture_loop_scope` to "function" when
it is unset, so that pytest-asyncio does not warn on every run.

How the async fixtures work under each plugin
---------------------------------------------
An async fixture must be run by whichever plugin runs the test, in the test's event loop:
the server is a task of that loop. pytest-asyncio in strict mode runs only fixtures marked
as its own, anyio's plugin runs async fixtures only for tests that use `anyio_backend`, and
either one running the other's fixture would serve the emulator from a loop that is idle
while the test runs. So `wenxin_emulator` is registered as an async generator fixture that
pytest-asyncio recognises as its own, and this module's `pytest_fixture_setup` hook (run
before either plugin's) picks the runner for each test:

- a test that uses `anyio_backend` (`@pytest.mark.anyio`): the fixture body runs in anyio's
  test runner, in the task that runs the test (our hook does what anyio's own does);
- a pytest-asyncio test (`@pytest.mark.asyncio` in strict mode, any async test in auto
  mode): pytest-asyncio runs it in the loop of the test's `loop_scope`. pytest-asyncio
  runs a fixture's setup and teardown as two separate tasks, and the emulator's task group
  must be entered and left by one task, so the fixture hosts the emulator in an asyncio
  task of its own for the test's duration;
- any other test (a sync test, another plugin): the fixture fails with what to do.

`wenxin_client` is a plain synchronous fixture (building an `AsyncClient` needs no loop),
so it works wherever `wenxin_emulator` does.
"""

from typing import TYPE_CHECKING, Any

from . import _plugin
from ._answers import Kind as Kind  # not in __all__, but public: WenxinMock's argument types
from ._answers import UsageLike as UsageLike
from ._answers import VectorsLike as VectorsLike
from ._emulator import ASGI_BASE_URL, INSTANT_RETRIES, RunningEmulator, run_emulator
from ._mock import WenxinMock, mock_wenxin
from ._plugin import wenxin_client, wenxin_emulator

if TYPE_CHECKING:
    from ..emulator import EmulatorConfig


def __getattr__(name: str) -> Any:
    # `EmulatorConfig` lives with the emulator, whose import (starlette) waits until used.
    if name == "EmulatorConfig":
        from ..emulator import EmulatorConfig

        return EmulatorConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# A pytest11 entry point registers this module object: the hooks must be its attributes.
pytest_addoption = _plugin.pytest_addoption
pytest_configure = _plugin.pytest_configure
pytest_fixture_setup = _plugin.pytest_fixture_setup

__all__ = [
    "ASGI_BASE_URL",
    "INSTANT_RETRIES",
    "EmulatorConfig",
    "RunningEmulator",
    "WenxinMock",
    "mock_wenxin",
    "run_emulator",
    "wenxin_client",
    "wenxin_emulator",
]
