"""The ``cluf`` command line: ``cluf SCRIPT [options]`` and ``cluf status DIR``."""
from __future__ import annotations

import sys
import traceback

import click

from ..checkpoint import CheckpointError
from .bins import BinSpecError
from .direct import (ScriptError, Terminated, load_script, run_direct,
                     terminate_on_sigterm)
from .dispatch import SchedulerError, dispatch, status
from .options import OptionError, merge, read_rc

USER_ERRORS = (OptionError, BinSpecError, ScriptError, SchedulerError,
               CheckpointError)


class _DefaultRun(click.Group):
    """``cluf SCRIPT ...`` means ``cluf run SCRIPT ...``."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ('--help', '-h'):
            args = ['run', *args]
        return super().parse_args(ctx, args)


@click.group(cls=_DefaultRun, context_settings={'help_option_names': ['-h', '--help']})
def main():
    """Call a script's `target` on every value of its `args`, on all local
    cores (direct mode) or as subjobs of a SLURM/PBS cluster (dispatch mode).

    cluf SCRIPT.py [options]  (short for: cluf run SCRIPT.py [options])
    """


def _flag(name, help):
    return click.option(f'--{name}/--no-{name}', default=None, help=help)


@main.command('run')
@click.argument('script', type=click.Path(dir_okay=False))
@click.option('-t', '--target', help="name of the function to call (default 'target')")
@click.option('-a', '--args', 'args_', help="name of the arguments' iterable (default 'args')")
@click.option('-m', '--mode', type=click.Choice(['direct', 'dispatch']),
              help='direct (default) or dispatch (default when -n or -i is given)')
@click.option('-p', '--processes', help='worker processes (default: all cores)')
@click.option('-c', '--checkpoint', help='checkpoint file of a direct run')
@click.option('--checkpoint-interval', help='seconds between checkpoints (default 600)')
@click.option('-b', '--bins', help='run only bins "x/y", e.g. "3/10" or "0-2,5/10"')
@click.option('-x', '--hash', 'hash_', help='bin by a stable hash of these arguments, '
              'e.g. "0-2,5,my_kwarg"')
@click.option('-k', '--key', help='take the bin from this argument (position or name)')
@_flag('keep-going', 'run the other arguments when one fails; summarize at the end')
@click.option('-n', '--nodes', help='dispatch: number of subjobs')
@click.option('-i', '--iterations', help='dispatch: about this many arguments per subjob')
@click.option('-j', '--jobs-dir', help='dispatch: folder for scripts and state '
              '(default cluf_jobs)')
@click.option('-q', '--queue/--no-queue', default=None, help='dispatch: submit the scripts')
@click.option('--scheduler', type=click.Choice(['slurm', 'pbs']),
              help='dispatch: default is the one installed, else slurm')
@_flag('array', 'dispatch: one SLURM job array instead of one job per subjob')
@click.option('--max-array-size', help="dispatch: cap on array tasks (default: "
              "the site's MaxArraySize)")
@_flag('fresh', 'dispatch: forget finished bins in the jobs folder, run all')
@click.option('-e', '--env', multiple=True, help='dispatch: \'A=1 B="x y"\' exported '
              'by the subjobs (repeatable)')
@click.option('--prepend-script', multiple=True, help='dispatch: files (comma-'
              'separated) inlined before the run line')
@click.option('--append-script', multiple=True, help='dispatch: files inlined after it')
@click.option('--prepend-statements', multiple=True, help='dispatch: a shell line '
              'before the run line (repeatable)')
@click.option('--append-statements', multiple=True, help='dispatch: a shell line after it')
@_flag('progress', 'progress line on a terminal')
@_flag('report', 'end-of-run statistics on stderr')
def run(script, args_, hash_, progress, mode, **cli):
    """Run SCRIPT's target over its args (see docs/cluf.md)."""
    cli.update(args=args_, hash=hash_, show_progress=progress)
    cli = {k: (None if v == () else v) for k, v in cli.items()}
    jobs_dir_given = cli['jobs_dir'] is not None
    try:
        rc = read_rc()
        module = load_script(script)
        opts = merge(cli, getattr(module, 'cluf_options', None), rc)
        if mode is None:
            mode = 'dispatch' if opts['nodes'] or opts['iterations'] else 'direct'
        if mode == 'direct':
            terminate_on_sigterm()
            code = run_direct(module, opts,
                              record_dir=opts['jobs_dir'] if jobs_dir_given else None)
        else:
            code = dispatch(module, script, opts)
    except USER_ERRORS as e:
        click.echo(f'cluf: error: {e}', err=True)
        sys.exit(2)
    except Terminated as e:
        click.echo(f'cluf: {e}; the bins of this run are marked failed.', err=True)
        sys.exit(143)
    except KeyboardInterrupt:
        click.echo('cluf: interrupted', err=True)
        sys.exit(130)
    except Exception:
        traceback.print_exc()
        click.echo('cluf: the run stopped on the error above (use --keep-going '
                   'to run the other arguments).', err=True)
        sys.exit(1)
    sys.exit(code)


@main.command('status')
@click.argument('jobs_dir', type=click.Path(file_okay=False, exists=True))
def status_command(jobs_dir):
    """Show which bins of a dispatch are done, running, failed or waiting."""
    try:
        sys.exit(status(jobs_dir))
    except OptionError as e:
        click.echo(f'cluf: error: {e}', err=True)
        sys.exit(2)

