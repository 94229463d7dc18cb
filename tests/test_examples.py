"""The scripts in examples/ run as users run them, plain and (once MPI is
there) under mpiexec; their output is checked."""
import pathlib
import subprocess
import sys

import pytest

from conftest import script_env

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / 'examples'
EXPECTED = {
    'primes.py': ['9592 primes below 100000'],
    'word_length.py': ['average word length: 3.625'],
    'frame_sum.py': ['sum(1..3) = 6', 'sum(1..10) = 55', 'sum(1..100) = 5050'],
    'class_api.py': ['total: 165'],
}


def test_every_example_has_an_expectation():
    assert sorted(p.name for p in EXAMPLES.glob('*.py')) == sorted(EXPECTED)


@pytest.mark.parametrize('launcher', [[], ['mpiexec', '-n', '3']],
                         ids=['python', 'mpiexec-3'])
@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_example(name, launcher, tmp_path):
    proc = subprocess.run([*launcher, sys.executable, str(EXAMPLES / name)],
                          cwd=tmp_path, env=script_env(unbuffered=not launcher),
                          capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    for line in EXPECTED[name]:
        # results are printed by rank 0 alone
        assert proc.stdout.splitlines().count(line) == 1, proc.stdout
    # the end-of-run report, with one line per rank
    assert 'quality' in proc.stderr
    hosts = [l for l in proc.stderr.splitlines() if ' user time (' in l]
    assert len(hosts) == (3 if launcher else 1), proc.stderr
