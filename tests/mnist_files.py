"""Where tests find the real MNIST files: $NPNN_DATA or the default cache, else the repository's sibling."""

from pathlib import Path

from npnn.datasets import mnist

SIBLING = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
PLACES = [mnist.default_root(), SIBLING]


def real_mnist_dir() -> Path | None:
    """The first of PLACES holding all four MNIST files, or None."""
    return next((p for p in PLACES if all(mnist.find_file(p, n) for n in mnist.FILES)), None)


def skip_reason() -> str:
    """Why a test that needs the real files is skipped."""
    return (
        "the real MNIST files are in none of "
        + ", ".join(map(str, PLACES))
        + " ($NPNN_DATA or ~/.cache/npnn/mnist, then the repository's sibling shared/data/mnist)"
    )
