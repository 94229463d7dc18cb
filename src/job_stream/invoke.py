"""``invoke``: run an external program from a job, with retries on transient errors.

    >>> from job_stream import invoke
    >>> out, err = invoke(['/bin/echo', 'hello'])
    >>> out
    'hello\\n'

Both output streams are read concurrently to the end (``communicate``), so a
program writing megabytes to stdout and stderr never blocks on a full pipe.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import Iterable, Sequence, Tuple

#: Always treated as transient: the OS lost track of the child (seen on
#: loaded cluster nodes), not a failure of the program.
ALWAYS_TRANSIENT = ('No child processes',)
# Pause before retry n is min(RETRY_PAUSE * n, RETRY_PAUSE_MAX) seconds: short
# enough for tests and interactive use, long enough to let a busy resource go.
RETRY_PAUSE = 0.05
RETRY_PAUSE_MAX = 2.0


def invoke(progAndArgs: Sequence[str], transientErrors: Iterable[str] = [],
           maxRetries: int = 20) -> Tuple[str, str]:
    """Run ``progAndArgs`` and return its ``(stdout, stderr)`` as text.

    Args:
        progAndArgs: the program and its arguments, e.g.
            ``['./simulate', '--seed', '3']``.  A program given with a path
            (``./simulate``, ``bin/sim``) is resolved against the working
            directory; a bare name is looked up in the working directory,
            then on ``PATH``.
        transientErrors: substrings of stderr that mark a failure as
            transient (e.g. ``['Resource temporarily unavailable']``);
            "No child processes" always is.  A transient failure is retried.
        maxRetries: how many times a transient failure is retried before
            the error is raised.

    Raises:
        RuntimeError: "Program not found: ...", "Program specified not
            executable: ...", or the program's exit code and stderr when it
            exits non-zero (after the retries, if transient).
    """
    if isinstance(progAndArgs, (str, bytes)):
        raise TypeError('invoke() takes a list: [program, arg1, arg2, ...], '
                        f'not the string {progAndArgs!r}')
    args = [os.fspath(a) if isinstance(a, os.PathLike) else str(a)
            for a in progAndArgs]
    if not args:
        raise ValueError('invoke() needs at least the program to run')
    if maxRetries < 0:
        raise ValueError(f'maxRetries must be 0 or more, not {maxRetries!r}')
    args[0] = _resolve(args[0])
    transient = tuple(transientErrors) + ALWAYS_TRANSIENT
    attempt = 0
    while True:
        try:
            proc = subprocess.run(args, stdin=subprocess.DEVNULL,
                                  capture_output=True)
            code, out, err = proc.returncode, proc.stdout, proc.stderr
        except ChildProcessError as e:  # ECHILD: the same transient failure
            code, out, err = -1, b'', str(e).encode()
        stdout = out.decode(errors='replace')
        stderr = err.decode(errors='replace')
        if code == 0:
            return stdout, stderr
        if attempt < maxRetries and any(t in stderr for t in transient):
            attempt += 1
            time.sleep(min(RETRY_PAUSE * attempt, RETRY_PAUSE_MAX))
            continue
        tried = f' (after {attempt + 1} attempts)' if attempt else ''
        raise RuntimeError(f'Program {args[0]} exited with status {code}'
                           f'{tried}; stderr:\n{stderr}')


def _resolve(program: str) -> str:
    has_dir = os.sep in program or (os.altsep and os.altsep in program)
    path = os.path.abspath(program)
    if not has_dir and not os.path.exists(path):
        found = shutil.which(program)
        if found is None:
            raise RuntimeError(f'Program not found: {program!r} (not in the '
                               f'working directory {os.getcwd()} nor on PATH)')
        path = found
    if not os.path.exists(path):
        raise RuntimeError(f'Program not found: {path}')
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        raise RuntimeError(f'Program specified not executable: {path} (set '
                           f'its executable bit: chmod +x {program})')
    return path
