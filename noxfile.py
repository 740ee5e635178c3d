"""Developer sessions: `nox -s tests`, `lint`, `typecheck`, `docs`, `bench`, `demo`."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test]", "mypy")
    session.run("mypy", "--strict", "baiduwx_async")


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
