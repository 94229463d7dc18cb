"""Every ```python example in docs/*.md and README.md runs, as ``python example.py`` and
as ``mpiexec -n 3 python example.py`` (scripts run unchanged under MPI).

HTML comments right before a block say more about it:

* ``<!-- expect: 285 -->``: what its stdout must contain (under mpiexec,
  rank 0 prints it; other ranks may print too, e.g. a caught error);
* ``<!-- plain only: REASON -->``: not run under mpiexec, for blocks that
  drive commands in subprocesses (three ranks would run three drivers over
  the same files).

Every block must exit 0.
"""
import pathlib
import re
import subprocess
import sys

import pytest

from conftest import script_env

ROOT = pathlib.Path(__file__).resolve().parent.parent
BLOCK = re.compile(r'((?:<!--.*?-->\s*\n)*)```python\n(.*?)```', re.S)
NOTE = re.compile(r'<!--\s*([\w ]+?)\s*:\s*(.*?)\s*-->', re.S)
MPIEXEC = ['mpiexec', '-n', '3']


def doc_blocks():
    for page in [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]:
        for i, m in enumerate(BLOCK.finditer(page.read_text())):
            notes = dict(NOTE.findall(m.group(1)))
            for launcher, name in (([], 'python'), (MPIEXEC, 'mpiexec-3')):
                if launcher and 'plain only' in notes:
                    continue
                yield pytest.param(m.group(2), notes.get('expect'), launcher,
                                   id=f'{page.stem}-{i}-{name}')


@pytest.mark.parametrize('code,expect,launcher', list(doc_blocks()))
def test_doc_example_runs(code, expect, launcher, tmp_path):
    path = tmp_path / 'example.py'
    path.write_text(code)
    proc = subprocess.run([*launcher, sys.executable, str(path)],
                          capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env=script_env(unbuffered=not launcher),
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    if expect:
        assert expect in proc.stdout, proc.stdout
