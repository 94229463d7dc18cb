"""Shared test helpers: run a user script as a real process, as users do."""
import os
import subprocess
import sys
import textwrap

import pytest

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', 'src'))
# The tests' own process uses this checkout too (not another installed copy).
sys.path.insert(0, SRC)


def script_env(extra=None, unbuffered=True):
    """The environment a test script runs with: this checkout's package first.

    ``unbuffered`` sets PYTHONUNBUFFERED so output written before a kill is
    seen; not under mpiexec, which merges the ranks' streams: unbuffered
    writes of one line in pieces would interleave with other ranks' lines.
    """
    env = dict(os.environ)
    env['PYTHONPATH'] = SRC + os.pathsep + env.get('PYTHONPATH', '')
    if unbuffered:
        env.setdefault('PYTHONUNBUFFERED', '1')
    else:
        env.pop('PYTHONUNBUFFERED', None)
    env.update(extra or {})
    return env


@pytest.fixture
def run_script(tmp_path):
    """Write ``code`` to a file and run it with ``python file ARGS``.

    Returns the CompletedProcess (text stdout/stderr).  With ``check=True``
    (default) a non-zero exit fails the test showing both streams.
    ``launcher`` is prepended to the command (e.g. ``['mpiexec', '-n', '2']``).
    """
    def run(code, *args, timeout=120, env=None, cwd=None, check=True,
            name='script.py', launcher=()):
        path = tmp_path / name
        path.write_text(textwrap.dedent(code))
        proc = subprocess.run(
            [*launcher, sys.executable, str(path), *map(str, args)],
            capture_output=True, text=True, timeout=timeout,
            env=script_env(env, unbuffered=not launcher), cwd=cwd or tmp_path, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(
                f'{path.name} exited {proc.returncode}\n--- stdout ---\n'
                f'{proc.stdout}\n--- stderr ---\n{proc.stderr}')
        return proc
    return run
