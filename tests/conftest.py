"""What every test module shares: requires(), and no skipped test in CI.

The README's test command installs the `test` extra. A test that needs a package beyond it (a peer
writer, torch, the Hugging Face client, ...) asks for it with requires(), at module level or
inside the test:

    from conftest import requires
    torch = requires("torch", "peers", "add_graph of an nn.Module")

Without the package the test (or the module) is skipped, and `-ra` prints the reason with the extra
that brings it. With CI=true (.ci/run, which installs the `peers` extra too) a skipped test, from
requires() or any other cause, fails the run: CI runs every test.
"""

import importlib
import os

import pytest

STRICT = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def requires(module: str, extra: str, why: str):
    """Import and return module, or skip the calling test (module) naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pytest.skip(
            f"{why}: needs {module}, in the {extra!r} extra: pip install -e '.[{extra}]' ({e})", allow_module_level=True
        )


def pytest_sessionfinish(session, exitstatus):
    """Under CI=true, fail a run that skipped anything."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if STRICT and skipped and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        reporter.write_line(f"CI=true: {len(skipped)} skipped, and CI runs every test: failing the run", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
