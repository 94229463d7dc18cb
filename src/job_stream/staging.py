"""``job_stream --stage``: copy the script and named files to a scratch
folder on each host that runs a rank, for hosts that do not share this
machine's file system.

One ssh connection per host (the MPI launcher's ssh: ``HYDRA_LAUNCHER_EXEC``,
``OMPI_MCA_plm_rsh_agent``, else ``ssh``) makes a fresh folder with
``mktemp -d`` and unpacks a tar stream of the files into it, keeping their
paths relative to the current folder (files outside it go to the top of the
scratch folder).  The ranks on that host start in their folder, with the
arguments that name staged files pointing into it.  The folders are removed
when the run ends, whatever its outcome.  Hosts are copied to in parallel.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

# Seconds one host may take to receive the files (connect, copy, unpack).
STAGE_TIMEOUT = 300.0
# Seconds one host may take to remove its scratch folder at the end.
CLEANUP_TIMEOUT = 20.0
SCRATCH_PREFIX = 'job_stream-stage.'
_MAKE_SCRATCH = ('d=$(mktemp -d "${TMPDIR:-/tmp}/' + SCRATCH_PREFIX + 'XXXXXX")'
                 ' && tar -x -f - -C "$d" && echo "$d"')


class StagingError(RuntimeError):
    """Staging failed; the message names the file or host and what to do."""


class StagedFiles:
    """Files to stage and, once copied, each host's scratch folder."""

    def __init__(self, paths: list, command: list, cwd: Optional[str] = None):
        self.cwd = os.path.abspath(cwd or os.getcwd())
        self.files: dict = {}  # absolute path -> path inside the scratch folder
        for path in paths:
            self._add(path)
        # the script: the first argument that names an existing file
        # (PROG too, when it lives below the current folder)
        prog = os.path.abspath(command[0])
        if os.path.isfile(prog) and prog.startswith(self.cwd + os.sep):
            self._add(prog)
        for arg in command[1:]:
            if not arg.startswith('-') and os.path.isfile(arg):
                self._add(arg)
                break
        self.folders: dict = {}  # host -> scratch folder

    def _add(self, path: str) -> None:
        full = os.path.abspath(path)
        if not os.path.exists(full):
            raise StagingError(f'Cannot stage {path}: no such file or folder '
                             f'(give paths relative to {self.cwd}, or absolute).')
        inside = full.startswith(self.cwd + os.sep)
        self.files[full] = (os.path.relpath(full, self.cwd) if inside
                            else os.path.basename(full))

    def copy(self, hosts: list) -> None:
        """Make a scratch folder on every host and unpack the files there;
        on any failure remove the folders already made and raise."""
        with tempfile.NamedTemporaryFile(prefix=SCRATCH_PREFIX,
                                         suffix='.tar') as archive:
            with tarfile.open(fileobj=archive, mode='w') as tar:
                for full, name in self.files.items():
                    tar.add(full, arcname=name)
            archive.flush()
            failures = _on_each(lambda h: self._copy_one(h, archive.name),
                                hosts)
        if failures:
            self.clean()
            raise StagingError(failures[0])

    def _copy_one(self, host: str, archive: str) -> Optional[str]:
        try:
            with open(archive, 'rb') as source:
                proc = subprocess.run(ssh_command(host, _MAKE_SCRATCH),
                                      stdin=source, capture_output=True,
                                      text=True, timeout=STAGE_TIMEOUT)
        except subprocess.TimeoutExpired:
            return (f'Could not stage files to host {host}: no answer within '
                    f'{STAGE_TIMEOUT:.0f} s. Check that the host is up.')
        except OSError as e:
            return f'Could not stage files to host {host}: {e}.'
        folder = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ''
        if proc.returncode != 0 or not _is_scratch(folder):
            return (f'Could not stage files to host {host}: {_reason(proc)}. Check '
                    f'that "ssh {host}" works without a password, or drop '
                    f'--stage when the hosts share this file system.')
        self.folders[host] = folder
        return None

    def command_for(self, host: str, command: list) -> list:
        """``command`` as run on ``host``: started in its scratch folder, with
        the arguments naming staged files pointing into it."""
        folder = self.folders[host]
        moved = [command[0]]
        for arg in command[1:]:
            name = self.files.get(os.path.abspath(arg)) if arg else None
            moved.append(os.path.join(folder, name) if name else arg)
        prog = self.files.get(os.path.abspath(command[0]))
        if prog:
            moved[0] = os.path.join(folder, prog)
        return ['/bin/sh', '-c', 'cd "$0" && exec "$@"', folder] + moved

    def clean(self) -> list:
        """Remove every scratch folder; return warnings for those that could
        not be removed."""
        folders, self.folders = self.folders, {}
        return _on_each(lambda item: _remove(*item), list(folders.items()))


def _on_each(fn, items: list) -> list:
    """``fn`` on every item (a host), in parallel; the messages it returned
    (None means all went well)."""
    if not items:
        return []
    with ThreadPoolExecutor(min(16, len(items))) as pool:
        return [message for message in pool.map(fn, items) if message]


def _reason(proc: subprocess.CompletedProcess) -> str:
    """The last line a failed remote command wrote, or its exit status."""
    return (proc.stderr.strip().splitlines()
            or [f'exit status {proc.returncode}'])[-1]


def _is_scratch(folder: str) -> bool:
    return bool(re.fullmatch(r'/\S*/' + re.escape(SCRATCH_PREFIX) + r'\w{6}',
                             folder))


def _remove(host: str, folder: str) -> Optional[str]:
    assert _is_scratch(folder), folder  # never rm -rf anything else
    try:
        proc = subprocess.run(ssh_command(host, f'rm -rf -- {shlex.quote(folder)}'),
                              stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=CLEANUP_TIMEOUT)
        if proc.returncode == 0:
            return None
        reason = _reason(proc)
    except subprocess.TimeoutExpired:
        reason = f'no answer within {CLEANUP_TIMEOUT:.0f} s'
    except OSError as e:
        reason = str(e)
    return (f'job_stream: could not remove the staged files {folder} on host '
            f'{host} ({reason}); remove them by hand.')


def ssh_command(host: str, remote: str) -> list:
    """The launcher's ssh (``HYDRA_LAUNCHER_EXEC``, ``OMPI_MCA_plm_rsh_agent``,
    else ``ssh``) running ``remote`` on ``host``."""
    ssh = (os.environ.get('HYDRA_LAUNCHER_EXEC')
           or os.environ.get('OMPI_MCA_plm_rsh_agent') or 'ssh')
    args = shlex.split(ssh)
    if os.path.basename(args[0]) == 'ssh':
        # never wait on a password prompt; give up on a dead host quickly
        args += ['-o', 'BatchMode=yes', '-o', 'ConnectTimeout=10']
    return args + [host, remote]
