"""Every ```python block in docs/*.md runs, in order, one namespace per page, so the docs cannot rot."""
import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def pages():
    return sorted(DOCS.glob("*.md"))


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.name)
def test_doc_code_blocks_run(page, monkeypatch):
    blocks = BLOCK.findall(page.read_text(encoding="utf-8"))
    assert blocks, f"{page.name} has no python code blocks"
    monkeypatch.chdir(page.parent)
    namespace = {"__name__": f"docs.{page.stem}"}
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"{page.name}[block {i}]", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"{page.name}, code block {i} failed: {exc!r}\n{code}") from exc
