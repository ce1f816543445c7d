"""Hypothesis example counts: small and fixed in CI, raised for a long run by NPNN_HYPOTHESIS_EXAMPLES."""

import os


def examples(default: int) -> int:
    """default, or NPNN_HYPOTHESIS_EXAMPLES when set (e.g. 5000 for a long run)."""
    return int(os.environ.get("NPNN_HYPOTHESIS_EXAMPLES", default))
