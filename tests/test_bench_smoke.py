"""bench/throughput.py --quick runs to the end and prints its tables."""
import pathlib
import subprocess
import sys

from conftest import script_env

BENCH = pathlib.Path(__file__).resolve().parent.parent / 'bench' / 'throughput.py'


def test_benchmark_quick_prints_tables():
    proc = subprocess.run([sys.executable, str(BENCH), '--quick'],
                          capture_output=True, text=True, timeout=60,
                          env=script_env(), stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for title in ('1. throughput', '2. parallel efficiency', '3. makespan',
                  '4. peak RSS'):
        assert title in out, out
    assert '| job_stream.map |' in out
    assert 'x Pool.imap' in out and 'MiB vs serial' in out
