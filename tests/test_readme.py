"""The README and docs/ as a newcomer meets them: examples that run, links that resolve."""

import os
import re
import subprocess
import sys

import pytest

from tbwriter import reader

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
README = os.path.join(ROOT, "README.md")
DOCS = sorted(os.path.join(ROOT, "docs", f) for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md"))


def _text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_is_short_and_its_quick_start_is_two_commands_matching_ci():
    text = _text(README)
    assert len(text.splitlines()) < 200
    quick = text[text.index("## Quick start") :]
    commands = [line for line in _blocks(quick, "bash")[0].splitlines() if line.strip()]
    assert len(commands) == 2
    assert re.search(r"pip install -e '\.\[lab\]' && python -m npnn\.xor$", commands[0])
    assert commands[1] == "pip install -e '.[test]' && python -m pytest -q"
    assert commands[1] in _text(os.path.join(ROOT, ".ci", "run"))  # CI runs the README's test command


def _extra(pyproject: dict, name: str) -> list[str]:
    """The requirements of an extra, with the project's own extras it names expanded."""
    out = []
    for req in pyproject["project"]["optional-dependencies"][name]:
        own = re.fullmatch(r"npnn-tbwriter\[([\w,]+)\]", req)
        out += [r for e in own.group(1).split(",") for r in _extra(pyproject, e)] if own else [req]
    return out


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is Python 3.11's")
def test_the_readme_commands_install_no_torch_and_extras_pin_nothing():
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        pyproject = tomllib.load(f)
    names = {e: {re.match(r"[\w.-]+", r).group().lower() for r in _extra(pyproject, e)} for e in ("lab", "test")}
    assert names["lab"] == {"tensorboard"}
    assert not names["test"] & {"torch", "transformers", "accelerate", "tensorflow", "jax"}
    for extra in pyproject["project"]["optional-dependencies"]:
        for req in _extra(pyproject, extra):
            assert "==" not in req, f"{extra}: {req} is an exact pin; exact versions go in .ci/constraints.txt"


def test_readme_python_examples_run(tmp_path):
    blocks = _blocks(_text(README), "python")
    assert len(blocks) == 2
    script = tmp_path / "examples.py"
    script.write_text("\n".join(blocks))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    cost, rest = out.stdout.split(" ", 1)
    assert float(cost) < 0.01 and rest.strip() == "[False  True  True False]"  # XOR learned
    runs = reader.event_files(str(tmp_path / "runs" / "demo"))
    values = [
        (e.step, e.summary.value[0].simple_value)
        for path in runs["."]
        for e in reader.read_events(path)
        if e.HasField("summary")
    ]
    assert values == [(s, pytest.approx(1 / (s + 1))) for s in range(100)]


@pytest.mark.parametrize("path", [README] + DOCS, ids=lambda p: os.path.relpath(p, ROOT))
def test_links_and_anchors_resolve(path):
    text = _text(path)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links or path != README
    for link in links:
        if re.match(r"[a-z]+://", link):
            continue
        target, _, anchor = link.partition("#")
        target = os.path.normpath(os.path.join(os.path.dirname(path), target)) if target else path
        assert os.path.exists(target), f"{os.path.relpath(path, ROOT)}: {link} does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```", "", _text(target), flags=re.S | re.M), re.M)
            assert anchor in {_anchor(h) for h in headings}, f"{os.path.relpath(path, ROOT)}: no #{anchor}"
