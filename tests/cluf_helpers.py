"""Helpers of the cluf tests: write a script, run the cluf command on it."""
import subprocess
import sys
import textwrap

from conftest import script_env

# A target that records each call as one line of the file out/<first arg>,
# so a test can check every argument ran exactly once.
RECORDING_SCRIPT = '''
import os
import job_stream

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'out')
os.makedirs(OUT, exist_ok=True)

def target(a, b=0, c='-'):
    with open(os.path.join(OUT, str(a)), 'a') as f:
        f.write(f'{b} {c} {os.environ.get("CLUF_TEST_VALUE", "")}\\n')

args = [(i, i * 10) for i in range(N)]
'''


def write_script(folder, code='', n=10, name='job.py'):
    path = folder / name
    path.write_text(RECORDING_SCRIPT.replace('N)', f'{n})') + textwrap.dedent(code))
    return path


def cluf(*args, cwd, env=None, check=None, timeout=120):
    """Run ``python -m job_stream.cluf ARGS``; ``check`` is the expected exit."""
    proc = subprocess.run([sys.executable, '-m', 'job_stream.cluf', *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env=script_env({'CLUFRC': '', **(env or {})}),
                          stdin=subprocess.DEVNULL)
    if check is not None and proc.returncode != check:
        raise AssertionError(f'cluf {args} exited {proc.returncode}, expected '
                             f'{check}\n--- stdout ---\n{proc.stdout}\n--- stderr '
                             f'---\n{proc.stderr}')
    return proc


def calls(folder):
    """{first argument: list of recorded calls} from the out/ folder."""
    out = folder / 'out'
    if not out.exists():
        return {}
    return {int(p.name): p.read_text().splitlines() for p in out.iterdir()}


def ran_once(folder, n):
    got = calls(folder)
    assert sorted(got) == list(range(n)), sorted(got)
    twice = {a: c for a, c in got.items() if len(c) != 1}
    assert not twice, f'arguments run more than once: {twice}'
    return got
