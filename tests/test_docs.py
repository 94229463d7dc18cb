"""Every ```python example in docs/*.md and every script in examples/ runs.

A block may be preceded by an HTML comment giving what its stdout must
contain, e.g. ``<!-- expect: 285 -->``; every block must exit 0.
"""
import pathlib
import re
import subprocess
import sys

import pytest

from conftest import script_env

ROOT = pathlib.Path(__file__).resolve().parent.parent
BLOCK = re.compile(r'(?:<!--\s*expect:\s*(.*?)\s*-->\s*\n)?```python\n(.*?)```',
                   re.S)


def doc_blocks():
    for page in sorted((ROOT / 'docs').glob('*.md')):
        for i, m in enumerate(BLOCK.finditer(page.read_text())):
            yield pytest.param(m.group(2), m.group(1), id=f'{page.stem}-{i}')


@pytest.mark.parametrize('code,expect', list(doc_blocks()))
def test_doc_example_runs(code, expect, tmp_path):
    path = tmp_path / 'example.py'
    path.write_text(code)
    proc = subprocess.run([sys.executable, str(path)], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path,
                          env=script_env(), stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    if expect:
        assert expect in proc.stdout, proc.stdout
