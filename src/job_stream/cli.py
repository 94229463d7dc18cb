"""The ``job_stream`` command: run a program on the hosts of a hostfile.

    job_stream [-c FILE] [--hostfile FILE | --host 'h1,h2 cpus=2'] [--stage PATH]...
               [-v] [--] PROG ARGS...
    job_stream config [hostfile=PATH]
    job_stream git-results-progress [-c FILE]

PROG is resolved on PATH and started under ``mpiexec`` with one rank per
host, in the order listed (rank 0 on the first host), with the environment
forwarded (``JOBS_CHECKPOINT`` included).  With no hostfile configured and
no ``--host``, it runs on this machine alone, without MPI.  Inside a SLURM
or PBS allocation the hosts come from the allocation.  ``--stage`` copies
the script and named files to a scratch folder on the other hosts (see
:mod:`job_stream.staging`).

Liveness: every rank connects back to this command (``JOB_STREAM_MONITOR``)
and says its rank and host; rank 0 beats.  When rank 0 reports a lost rank,
exits, or falls silent, this command kills ``mpiexec``'s whole process group
(``mpiexec`` itself may hang for minutes on a cut link) and exits non-zero.
A rank whose connection closes without its goodbye is named with its host
at once (a killed rank or host; ``mpiexec``'s own message may not say).
"""
from __future__ import annotations

import os
import secrets
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Optional

import click

from .hosts import (CPUS_ENV, HostfileError, allocation_hosts, is_local,
                    parse_host_option, read_hostfile)

CHECKPOINT_ENV = 'JOBS_CHECKPOINT'
# Seconds without a beat from rank 0 after which the run is declared lost
# (rank 0 beats every 0.5 s from a thread).
MONITOR_SILENCE = 6.0
# Seconds mpiexec gets to finish on its own once rank 0 has gone.
LAUNCHER_GRACE = 2.0
EXIT_LOST = 75


# -- configuration ---------------------------------------------------------------
def config_path() -> str:
    import platformdirs
    return os.path.join(platformdirs.user_config_dir('job_stream'), 'config')


def read_config() -> dict:
    settings = {'hostfile': ''}
    try:
        with open(config_path()) as f:
            for line in f:
                key, sep, value = line.strip().partition('=')
                if sep:
                    settings[key] = value
    except FileNotFoundError:
        pass
    return settings


def write_config(settings: dict) -> None:
    path = config_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        for key, value in sorted(settings.items()):
            f.write(f'{key}={value}\n')
    os.replace(tmp, path)


# -- the command group -----------------------------------------------------------
class _Group(click.Group):
    """Subcommands by name; any other name is a program to run."""

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is None and name == 'cache':
            from .cache.cli import cache  # imported only when used: startup
            return cache
        return command

    def resolve_command(self, ctx, args):
        command = self.get_command(ctx, args[0])
        if command is not None:
            return args[0], command, args[1:]
        return '_run', _run_command, args

    def list_commands(self, ctx):
        names = sorted(super().list_commands(ctx) + ['cache'])
        return [n for n in names if n != '_run']


@click.group(cls=_Group, subcommand_metavar='PROG [ARGS]...',
             context_settings={'help_option_names': ['-h', '--help']})
@click.option('-c', '--checkpoint', type=click.Path(dir_okay=False),
              help='Checkpoint file: resume from it, save progress to it.')
@click.option('--hostfile', type=click.Path(dir_okay=False),
              help='Hosts to run on, one per line ("name [cpus=N]").')
@click.option('--host', 'host_list', metavar='HOSTS',
              help="Hosts to run on, comma-separated: 'h1,h2 cpus=2'.")
@click.option('--stage', 'stage', metavar='PATH', multiple=True,
              help='Copy PATH (a file or folder; repeat the option for more) '
                   'and the script to a scratch folder on each other host, '
                   'for hosts that do not share this file system.')
@click.option('-v', '--verbose', is_flag=True,
              help='Say where the hosts come from and how PROG is started.')
@click.pass_context
def main(ctx, checkpoint, hostfile, host_list, stage, verbose):
    """Run PROG ARGS on the hosts of a hostfile (or this machine) under MPI.

    Put -- before PROG when its arguments start with a dash. Subcommands:
    config, git-results-progress.
    """
    ctx.obj = {'checkpoint': checkpoint, 'hostfile': hostfile,
               'host': host_list, 'stage': stage, 'verbose': verbose}


@main.command('_run', hidden=True, add_help_option=False,
              context_settings={'ignore_unknown_options': True,
                                'allow_extra_args': True,
                                'allow_interspersed_args': False})
@click.argument('argv', nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def _run_command(obj, argv):
    sys.exit(launch(list(argv), **obj))


@main.command('config')
@click.argument('settings', nargs=-1)
def config_command(settings):
    """Show the settings, or set them: job_stream config hostfile=PATH
    (hostfile= clears it)."""
    current = read_config()
    if not settings:
        for key, value in sorted(current.items()):
            click.echo(f'{key}={value}')
        return
    for item in settings:
        key, sep, value = item.partition('=')
        if not sep or key != 'hostfile':
            raise click.UsageError(f'Unknown setting {item!r}; the settings '
                                   f'are: hostfile=PATH.')
        if value:
            value = os.path.abspath(value)
            if not os.path.isfile(value):
                raise click.UsageError(f'No hostfile at {value}.')
            read_hostfile(value)  # refuse a malformed one now
        current[key] = value
    write_config(current)
    for key, value in sorted(current.items()):
        click.echo(f'{key}={value}')


@main.command('git-results-progress')
@click.option('-c', '--checkpoint', type=click.Path(dir_okay=False))
@click.pass_obj
def progress_command(obj, checkpoint):
    """Print the checkpoint's modification time (or its .done file's, or -1)."""
    path = checkpoint or (obj or {}).get('checkpoint')
    for candidate in ([path, path + '.done'] if path else []):
        if os.path.exists(candidate):
            click.echo(f'{os.path.getmtime(candidate):.6f}')
            return
    click.echo('-1')


# -- launching ---------------------------------------------------------------------
def resolve_hosts(hostfile: Optional[str], host_list: Optional[str]) -> tuple:
    """The hosts of the run and where they come from (for ``--verbose``):
    ``--host``/``--hostfile``, the batch allocation, the configured hostfile,
    else none (this machine alone)."""
    if hostfile and host_list:
        raise HostfileError('Give --hostfile or --host, not both.')
    if host_list:
        return parse_host_option(host_list), '--host'
    if hostfile:
        return read_hostfile(hostfile), f'--hostfile {hostfile}'
    from_allocation, source = allocation_hosts(with_source=True)
    if from_allocation:
        return from_allocation, source
    configured = read_config().get('hostfile')
    if configured:
        return read_hostfile(configured), f'the configured hostfile {configured}'
    return [], 'no hostfile'  # this machine alone


def resolve_program(prog: str) -> list:
    found = shutil.which(prog)
    if found:
        return [found]
    if os.path.isfile(prog) and prog.endswith('.py'):
        return [sys.executable, prog]
    raise click.ClickException(f'Program {prog!r} not found on PATH (give a path, '
                           f'or put -- before it when it starts with a dash).')


def launch(argv: list, checkpoint: Optional[str] = None,
           hostfile: Optional[str] = None, host: Optional[str] = None,
           stage: tuple = (), verbose: bool = False) -> int:
    """Run ``argv`` on the hosts (see the module docstring); its exit status."""
    if not argv:
        raise click.UsageError('Missing PROG: job_stream [OPTIONS] PROG [ARGS]...')
    if argv[0] == '--':
        argv = argv[1:]
    try:
        hosts, source = resolve_hosts(hostfile, host)
    except HostfileError as e:
        raise click.ClickException(str(e))
    env = dict(os.environ)
    env.pop('JOB_STREAM_SHARED_DIR', None)  # each host keeps its own store
    if checkpoint:
        checkpoint = os.path.abspath(checkpoint)
        if os.path.exists(checkpoint + '.done'):
            click.echo(f'job_stream: the checkpoint {checkpoint} is complete '
                       f'({checkpoint}.done exists); nothing to run. Delete '
                       f'the .done file to run again.', err=True)
            return 0
        env[CHECKPOINT_ENV] = checkpoint
    command = resolve_program(argv[0]) + argv[1:]
    names = ', '.join(h.name + (f' cpus={h.cpus}' if h.cpus else '')
                      for h in hosts)
    if not hosts or (len(hosts) == 1 and is_local(hosts[0].name)
                     and hosts[0].cpus is None):
        # This machine alone: no MPI needed, and no launcher to start.
        if verbose:
            click.echo(f'job_stream: hosts from {source}: '
                       f'{names or "this machine"}; started without MPI.',
                       err=True)
        return _run_local(command, env)
    staged = None
    if stage:
        from .staging import StagedFiles, StagingError
        try:
            staged = StagedFiles(list(stage), command)
            remote = [h.name for h in hosts if not is_local(h.name)]
            staged.copy(remote)
        except StagingError as e:
            raise click.ClickException(str(e))
    if verbose:
        click.echo(f'job_stream: hosts from {source}: {names}; {len(hosts)} '
                   f'ranks under {mpiexec()}'
                   + (f'; staged {len(staged.files)} files to '
                      + ', '.join(f'{h.name}:{staged.folders[h.name]}'
                                  for h in hosts if h.name in staged.folders)
                      if staged and staged.folders else '') + '.', err=True)
    try:
        return _run_mpi(command, hosts, env, staged)
    finally:
        for warning in (staged.clean() if staged else []):
            click.echo(warning, err=True)


# Signals the command passes on to the program (through mpiexec, which
# passes them to every rank): a checkpointed run checkpoints and exits.
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class _Forward:
    """While running ``proc``: pass SIGTERM, SIGUSR1 and (``sigint``) SIGINT
    on to it, e.g. SLURM's walltime SIGTERM.  A second SIGINT raises
    KeyboardInterrupt (the caller kills everything)."""

    def __init__(self, proc, sigint: bool):
        self.proc = proc
        self.signals = [s for s in FORWARDED if sigint or s != signal.SIGINT]
        self.interrupts = 0
        self._old: dict = {}

    def __enter__(self):
        for sig in self.signals:
            self._old[sig] = signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum, frame) -> None:
        try:
            os.kill(self.proc.pid, signum)
        except ProcessLookupError:
            pass
        if signum == signal.SIGINT:
            self.interrupts += 1
            if self.interrupts > 1:
                raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _run_local(command: list, env: dict) -> int:
    proc = subprocess.Popen(command, env=env)
    # Ctrl-C in a terminal reaches the program directly (same process group)
    with _Forward(proc, sigint=False):
        return _wait_child(proc)


def _wait_child(proc) -> int:
    while True:
        try:
            code = proc.wait()
            break
        except KeyboardInterrupt:
            continue  # the child got the SIGINT too; let it finish
    return code if code >= 0 else 128 - code


def mpiexec() -> str:
    """The MPI launcher: the one installed beside this Python first (where
    ``pip install "job_stream[mpi]"`` puts it, matching mpi4py; also no
    version-manager shim to go through), else ``mpiexec``/``mpirun`` on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), 'mpiexec')
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which('mpiexec') or shutil.which('mpirun')
    if found is None:
        raise click.ClickException(
            'mpiexec not found on PATH: install MPI (pip install '
            '"job_stream[mpi]" brings mpich and mpi4py).')
    return found


def _run_mpi(command: list, hosts: list, env: dict, staged=None) -> int:
    listener = socket.socket()
    # an address every rank reaches: seen from a remote host if any
    remote = [h.name for h in hosts if not is_local(h.name)]
    listener.bind((_reachable_address((remote or [hosts[0].name])[0]), 0))
    listener.listen(len(hosts))
    address, port = listener.getsockname()[:2]
    token = secrets.token_hex(8)  # a rank's hello must carry it
    env['JOB_STREAM_MONITOR'] = f'{address}:{port}:{token}'
    cpus = [f'{h.name}={h.cpus}' for h in hosts if h.cpus]
    if cpus:
        env[CPUS_ENV] = ','.join(cpus)
    with tempfile.NamedTemporaryFile('w', prefix='job_stream-hosts-',
                                     suffix='.txt', delete=False) as f:
        for h in hosts:
            f.write(f'{h.name}:1\n')
        machinefile = f.name
    exe = mpiexec()
    if _is_open_mpi(exe):
        # Open MPI forwards only the variables it is told about.
        args, count = [exe, '--hostfile', machinefile, '--map-by', 'node'], '-np'
        for name in env:
            if not name.startswith(('OMPI_', 'PMIX_')) and name.isidentifier():
                args += ['-x', name]
    else:  # MPICH's Hydra (and Intel MPI)
        args, count = [exe, '-f', machinefile, '-genvall'], '-n'
    if staged is not None and staged.folders:
        # one block per host (rank r runs on host r): staged hosts start in
        # their scratch folder
        for i, h in enumerate(hosts):
            block = (staged.command_for(h.name, command)
                     if h.name in staged.folders else command)
            args += [':'] * (i > 0) + [count, '1'] + block
    else:
        args += [count, str(len(hosts))] + command
    try:
        proc = subprocess.Popen(args, env=env, start_new_session=True)
        try:
            with _Forward(proc, sigint=True):
                return _supervise(proc, listener, token)
        except KeyboardInterrupt:
            _kill_group(proc)
            return 130
    finally:
        listener.close()
        os.unlink(machinefile)


def _is_open_mpi(exe: str) -> bool:
    """True for Open MPI's launcher, False for MPICH's Hydra (and Intel MPI).

    Told from the files installed beside it when possible: asking
    ``mpiexec --version`` costs a process start (~0.1 s, more through a
    version-manager shim)."""
    real = os.path.realpath(exe)
    folder = os.path.dirname(real)
    if (os.path.basename(real) in ('orterun', 'prterun')
            or os.path.exists(os.path.join(folder, 'ompi_info'))):
        return True
    if any(os.path.exists(os.path.join(folder, name))
           for name in ('hydra_pmi_proxy', 'mpichversion', 'impi_info')):
        return False
    try:
        out = subprocess.run([exe, '--version'], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return 'Open MPI' in out or 'OpenRTE' in out


def _reachable_address(first_host: str) -> str:
    """This machine's address as seen from the first host (rank 0)."""
    if is_local(first_host):
        return '127.0.0.1'
    try:
        target = socket.gethostbyname(first_host)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((target, 9))
            return s.getsockname()[0]
    except OSError:
        return '0.0.0.0'


class _RankLink:
    """What one rank's monitor connection said: frames are ``H<token>
    <rank> <host>\\n`` (first), ``.`` (a beat), ``D`` (goodbye) and
    ``L<message>\\n`` (rank 0 lost another rank)."""

    def __init__(self, token: str):
        self._token = token
        self._buf = b''
        self.rank: Optional[int] = None
        self.host = '?'
        self.bye = False
        self.bad = False  # not one of our ranks: dropped

    def feed(self, data: bytes) -> list:
        """Take received bytes; return the complete frames as
        ``(kind, text)`` pairs: ``beat``, ``bye`` or ``lost``."""
        self._buf += data
        frames: list = []
        while self._buf and not self.bad:
            head = self._buf[:1]
            if head in b'HL':
                line, sep, rest = self._buf[1:].partition(b'\n')
                if not sep:
                    break  # wait for the rest of the line
                self._buf = rest
                text = line.decode(errors='replace')
                if head == b'L':
                    frames.append(('lost', text.strip()))
                    continue
                token, _, who = text.partition(' ')
                rank, _, host = who.partition(' ')
                if self.rank is not None or token != self._token \
                        or not rank.isdigit():
                    self.bad = True
                else:
                    self.rank, self.host = int(rank), host
            elif self.rank is None:
                self.bad = True  # anything before the hello
            else:
                self._buf = self._buf[1:]
                if head == b'D':
                    self.bye = True
                    frames.append(('bye', ''))
                elif head == b'.':
                    frames.append(('beat', ''))
                else:
                    self.bad = True
        return frames


def _supervise(proc, listener, token: str) -> int:
    """Wait for mpiexec; kill its process group when rank 0 is gone."""
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    exited = _exit_notifier(proc)
    if exited is not None:
        sel.register(exited, selectors.EVENT_READ)
    try:
        return _supervise_loop(proc, listener, sel, exited, token)
    finally:
        sel.close()
        if exited is not None:
            os.close(exited)


def _exit_notifier(proc) -> Optional[int]:
    """A file descriptor readable once ``proc`` exits (Linux pidfd), so the
    supervision loop wakes at once instead of at its next poll."""
    try:
        return os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return None


def _supervise_loop(proc, listener, sel, exited: Optional[int],
                    token: str) -> int:
    # Without a pidfd, mpiexec's exit is noticed by polling this often.
    poll = 0.5 if exited is not None else 0.05
    ranks: dict = {}  # connection -> _RankLink
    last_beat = None
    gone_since = None
    grace = LAUNCHER_GRACE
    finished = False
    named = False  # a lost rank was named already
    while True:
        code = proc.poll()
        if code is not None:
            _kill_group(proc)  # leftovers (ssh clients) of a finished launcher
            if code != 0 and not finished and gone_since is None and not named:
                click.echo(f'job_stream: mpiexec exited with status {code} '
                           f'before rank 0 finished (a rank, its host or its '
                           f'link was lost; see the messages above).', err=True)
            return code if code >= 0 else 128 - code
        for key, _ in sel.select(timeout=poll):
            if key.fileobj == exited:
                continue  # proc.poll() above returns its status
            if key.fileobj is listener:
                conn, _ = listener.accept()
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ)
                ranks[conn] = _RankLink(token)
                continue
            conn = key.fileobj
            link = ranks[conn]
            try:
                data = conn.recv(65536)
            except OSError:
                data = b''
            frames = link.feed(data) if data else []
            if not data or link.rank is None and link.bad:
                sel.unregister(conn)
                conn.close()
                del ranks[conn]
                if link.rank == 0:
                    gone_since = gone_since or time.monotonic()
                elif (link.rank is not None and not link.bye and not finished
                      and gone_since is None and not named):
                    named = True
                    click.echo(f'job_stream: rank {link.rank} on host '
                               f'{link.host} ended before its part of the run '
                               f'was done (killed, or its host went down).',
                               err=True)
                continue
            if link.rank != 0:
                continue  # other ranks only say hello and goodbye
            last_beat = time.monotonic()
            for kind, text in frames:
                if kind == 'bye':
                    # rank 0 is leaving normally: the other ranks get the
                    # heartbeat deadline to finish their part of the script
                    finished = True
                    grace = LAUNCHER_GRACE + 10
                elif kind == 'lost':
                    click.echo(text, err=True)
                    gone_since = gone_since or time.monotonic()
        now = time.monotonic()
        if (gone_since is None and last_beat is not None
                and now - last_beat > MONITOR_SILENCE):
            click.echo(f'job_stream: rank 0 has not been heard from for '
                       f'{now - last_beat:.0f} s (its host may be down); '
                       f'stopping the run.', err=True)
            gone_since = now - LAUNCHER_GRACE
        if gone_since is not None and now - gone_since >= grace:
            try:
                code = proc.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                code = None
            _kill_group(proc)
            if code is None:
                click.echo('job_stream: mpiexec did not finish on its own; '
                           'killed it.', err=True)
                return 0 if finished else EXIT_LOST
            return (code if code >= 0 else 128 - code) or (0 if finished else EXIT_LOST)


def _kill_group(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


if __name__ == '__main__':
    main(prog_name='job_stream')
