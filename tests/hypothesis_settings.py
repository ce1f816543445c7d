"""Example counts for the property-based (differential) tests, and a check that a test can fail.

CI runs each property at its default count; NPNN_HYPOTHESIS_EXAMPLES=N runs every one N times
for a long run (docs/reliability.md).
"""

import builtins
import os

import pytest
from hypothesis import Phase, settings

# hypothesis reports several distinct failures as one ExceptionGroup (a backport's before 3.11)
_FAILED = (AssertionError, getattr(builtins, "ExceptionGroup", AssertionError))


def examples(default: int) -> int:
    """The example count for a property: NPNN_HYPOTHESIS_EXAMPLES if set, else default."""
    return int(os.environ.get("NPNN_HYPOTHESIS_EXAMPLES") or default)


def assert_caught(prop, *args, **kwargs) -> None:
    """Run a @given property (under a deliberately broken variant) and require it to fail.

    Without shrinking (the failure is expected, its smallest form is not needed) and without
    saving the failing example, so normal runs do not replay a broken variant's inputs."""
    own = prop._hypothesis_internal_use_settings
    prop._hypothesis_internal_use_settings = settings(own, phases=[Phase.explicit, Phase.generate], database=None)
    try:
        with pytest.raises(_FAILED):
            prop(*args, **kwargs)
    finally:
        prop._hypothesis_internal_use_settings = own
