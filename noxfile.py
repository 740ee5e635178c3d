"""Developer sessions: `nox -s tests`, `tests-lowest`, `lint`, `typecheck`, `docs`, `bench`,
`demo`."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


#: The core and emulator tests: what the lowest dependency versions must pass. The CLI,
#: Redis, the official SDK's fidelity, the soaks and the pytest plugin run in `tests`.
LOWEST_TESTS = [
    "tests/test_models.py",
    "tests/test_sse.py",
    "tests/test_streaming.py",
    "tests/test_stream_tolerance.py",
    "tests/test_stream_break.py",
    "tests/test_client.py",
    "tests/test_retry.py",
    "tests/test_errors.py",
    "tests/test_signing.py",
    "tests/test_tokens.py",
    "tests/test_limits.py",
    "tests/test_iam.py",
    "tests/test_batch.py",
    "tests/test_hostile.py",
    "tests/test_transports.py",
    "tests/test_emulator.py",
    "tests/test_emulator_faults.py",
    "tests/test_emulator_server.py",
    "tests/test_emulator_stream.py",
    "tests/test_integration.py",
    "tests/test_fast_json.py",
]


@nox.session(name="tests-lowest", python="3.11")
def tests_lowest(session: nox.Session) -> None:
    """The core and emulator tests on the oldest Python and the lowest version of every
    direct dependency that pyproject.toml allows, so that each `>=` floor is a fact."""
    session.install("uv")
    session.run(
        "uv",
        "pip",
        "install",
        "--python",
        f"{session.bin}/python",
        "--resolution",
        "lowest-direct",
        "--reinstall",  # a reused environment must not keep newer versions it already has
        "-e",
        ".[test]",
    )
    session.run("uv", "pip", "list", "--python", f"{session.bin}/python")
    session.run("python", "-m", "pytest", "-q", *(session.posargs or LOWEST_TESTS))


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test]", "mypy")
    session.run("mypy", "--strict", "baiduwx_async")
    session.run("lint-imports")


@nox.session
def bench(session: nox.Session) -> None:
    """All benchmarks as one markdown table; `nox -s bench -- --quick` for a smoke run."""
    session.install("-e", ".[bench]")
    session.run("python", "benchmarks/run_all.py", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The offline demo: the emulator in-process, a chat, a stream and a batch."""
    session.install("-e", ".[cli]")
    session.run("baiduwx", "demo")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site into site/, strict: a broken link or reference fails it.
    `nox -s docs -- serve` previews it instead."""
    session.install("-e", ".[docs]")
    env = {"NO_MKDOCS_2_WARNING": "1"}  # else mkdocs-material warns of MkDocs 2 on every build
    if session.posargs[:1] == ["serve"]:
        session.run("mkdocs", "serve", env=env)
    else:
        session.run("mkdocs", "build", "--strict", env=env)
