"""Dispatch mode: one shell script per subjob (or one SLURM job array),
optionally submitted with ``sbatch`` / ``qsub``.

Subjob ``i`` of ``N`` runs ``cluf SCRIPT --mode direct --bins i/N`` with the
same options, so the subjobs together run every argument once.  Each marks
its bins in ``JOBS_DIR/state`` (see :mod:`.state`); dispatching again into
the same folder writes the scripts again but submits only subjobs with
unfinished bins.  The scripts are plain bash: ``bash subjob-0.sh`` runs a
subjob by hand.
"""
from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from typing import Dict, List, Optional

from . import state
from .bins import format_bins
from .direct import find_args, find_target, shape
from .options import OptionError

DEFAULT_NAME = '{target}-{subjob}-{num_subjobs}'
# SLURM's documented default MaxArraySize, used when scontrol cannot say.
SLURM_DEFAULT_MAX_ARRAY_SIZE = 1001
SUBMIT_TIMEOUT = 60


class SchedulerError(RuntimeError):
    """The scheduler's command is missing or refused a script."""


def detect_scheduler() -> str:
    if shutil.which('sbatch'):
        return 'slurm'
    if shutil.which('qsub'):
        return 'pbs'
    return 'slurm'


def site_max_array_size() -> int:
    """MaxArraySize from ``scontrol show config`` (SLURM's default if unknown)."""
    try:
        out = subprocess.run(['scontrol', 'show', 'config'], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return SLURM_DEFAULT_MAX_ARRAY_SIZE
    m = re.search(r'^\s*MaxArraySize\s*=\s*(\d+)', out, re.M)
    return int(m.group(1)) if m else SLURM_DEFAULT_MAX_ARRAY_SIZE


def count_subjobs(module, opts: dict) -> int:
    if opts['nodes']:
        return opts['nodes']
    if opts['iterations']:
        count = sum(1 for _ in find_args(module, opts['args']))
        return max(1, math.ceil(count / opts['iterations']))
    raise OptionError('A dispatch needs the number of subjobs: give --nodes N, '
                      'or --iterations K (about K arguments per subjob).')


def _fmt(template: str, **fields) -> str:
    try:
        return str(template).format(**fields)
    except (KeyError, IndexError, ValueError) as e:
        raise OptionError(f'scheduler option {template!r} is not a valid format '
                          f'string ({e}); fields are {{target}}, {{subjob}}, '
                          f'{{num_subjobs}}.') from None


def directives(scheduler: str, options: dict, *, target: str, subjob, num_subjobs: int,
               jobs_dir: str, processes: Optional[int], log_subjob=None) -> List[str]:
    """The ``#SBATCH`` / ``#PBS`` lines of one script."""
    o = dict(options)
    fields = dict(target=target, subjob=subjob, num_subjobs=num_subjobs)
    log_fields = dict(fields, subjob=subjob if log_subjob is None else log_subjob)
    name = _fmt(o.pop('name', DEFAULT_NAME), **fields)
    log_name = _fmt(options.get('name', DEFAULT_NAME), **log_fields)
    stdout = _fmt(o.pop('stdout', log_name + '.stdout'), **log_fields)
    stderr = _fmt(o.pop('stderr', log_name + '.stderr'), **log_fields)
    stdout, stderr = (os.path.join(jobs_dir, p) for p in (stdout, stderr))
    ppn = o.pop('ppn', None) or o.pop('cpus_per_task', None) or processes
    lines = []
    if scheduler == 'slurm':
        lines += [f'--job-name={name}', f'--output={stdout}', f'--error={stderr}',
                  '--nodes=1', '--ntasks=1']
        if ppn:
            lines.append(f'--cpus-per-task={ppn}')
        for key in sorted(o):
            flag = '--' + str(key).replace('_', '-')
            value = o[key]
            if value is True or value is None:
                lines.append(flag)
            elif value is not False:
                lines.append(f'{flag}={value}')
        return [f'#SBATCH {line}' for line in lines]
    lines += [f'-N {name}', f'-o {stdout}', f'-e {stderr}']
    lines.append(f'-l nodes=1:ppn={ppn}' if ppn else '-l nodes=1')
    for key in sorted(o):
        value = o[key]
        if key == 'queue':
            lines.append(f'-q {value}')
        elif key == 'account':
            lines.append(f'-A {value}')
        elif value is True or value is None:
            lines.append(f'-l {key}')
        elif value is not False:
            lines.append(f'-l {key}={value}')
    return [f'#PBS {line}' for line in lines]


def _read_files(paths: List[str], what: str) -> List[str]:
    out = []
    for p in paths:
        try:
            with open(os.path.expanduser(p)) as f:
                out.append(f'# --- {what} {p}\n' + f.read().rstrip('\n'))
        except OSError as e:
            raise OptionError(f'{what}: cannot read {p}: {e.strerror}.') from None
    return out


def run_command(script_path: str, opts: dict, bins_expr: str, jobs_dir: str,
                checkpoint: Optional[str]) -> str:
    """The shell line running one subjob in direct mode."""
    q = shlex.quote
    words = [q(sys.executable), '-m', 'job_stream.cluf', 'run', q(script_path),
             '--mode', 'direct', '--bins', bins_expr, '--jobs-dir', q(jobs_dir),
             '--target', q(opts['target']), '--args', q(opts['args']),
             '--keep-going' if opts['keep_going'] else '--no-keep-going',
             '--no-fresh', '--report' if opts['report'] else '--no-report',
             '--no-progress']
    if opts['processes']:
        words += ['--processes', str(opts['processes'])]
    if opts['hash'] is not None:
        words += ['--hash', q(opts['hash'])]
    if opts['key'] is not None:
        words += ['--key', q(opts['key'])]
    if checkpoint:
        words += ['--checkpoint', checkpoint]
    if opts['checkpoint_interval'] is not None:
        words += ['--checkpoint-interval', f"{opts['checkpoint_interval']:g}"]
    return ' '.join(words)


def script_text(scheduler: str, opts: dict, header: List[str], run_line: str,
                preamble: List[str] = ()) -> str:
    q = shlex.quote
    env = {}
    if os.environ.get('PYTHONPATH'):
        env['PYTHONPATH'] = os.environ['PYTHONPATH']
    env.update(opts['env'])
    lines = ['#!/bin/bash', *header,
             '# Written by cluf; run it with sbatch/qsub, or by hand with bash.',
             f'cd {q(os.getcwd())} || exit 1']
    lines += [f'export {k}={q(v)}' for k, v in env.items()]
    lines += list(preamble)
    lines += _read_files(opts['prepend_script'], 'prepend_script')
    lines += opts['prepend_statements']
    lines += [run_line, 'cluf_status=$?']
    lines += opts['append_statements']
    lines += _read_files(opts['append_script'], 'append_script')
    lines += ['exit $cluf_status']
    return '\n'.join(lines) + '\n'


def _write(path: str, text: str) -> None:
    with open(path, 'w') as f:
        f.write(text)
    os.chmod(path, 0o755)


def dispatch(module, script_path: str, opts: dict, out=sys.stderr) -> int:
    """Write (and with ``queue`` submit) the subjobs; returns the exit status."""
    find_target(module, opts['target'])
    if opts['bins'] is not None:
        raise OptionError('--bins selects bins of a direct run; a dispatch makes '
                          'one bin per subjob itself: drop --bins, or add '
                          '--mode direct.')
    if opts['hash'] is not None and opts['key'] is not None:
        raise OptionError('--hash and --key are mutually exclusive.')
    scheduler = opts['scheduler'] or detect_scheduler()
    if opts['array'] and scheduler != 'slurm':
        raise OptionError('--array makes a SLURM job array; PBS gets one script '
                          'per subjob (drop --array).')
    n = count_subjobs(module, opts)
    script_path = os.path.abspath(script_path)
    jobs_dir = os.path.abspath(opts['jobs_dir'])
    os.makedirs(jobs_dir, exist_ok=True)
    state.check_shape(jobs_dir, shape(module, opts, n), opts['fresh'])
    done = state.done_bins(jobs_dir)
    target = opts['target']
    sched_opts = opts['slurm_options' if scheduler == 'slurm' else 'pbs_options']
    checkpoints = os.path.join(jobs_dir, 'checkpoints')
    if opts['fresh']:
        shutil.rmtree(checkpoints, ignore_errors=True)
    os.makedirs(checkpoints, exist_ok=True)
    submissions = []  # (script path, extra submit arguments, description, units)
    record = state.read_json(os.path.join(jobs_dir, 'dispatch.json')) or {}
    if record.get('array') != opts['array'] or record.get('subjobs') != n:
        record['submitted'] = []   # another layout: old job ids name other units
    alive = in_queue(scheduler, record)
    if opts['array']:
        size = opts['max_array_size'] or site_max_array_size()
        per_task = math.ceil(n / size)
        tasks = math.ceil(n / per_task)
        header = directives(scheduler, sched_opts, target=target, subjob='array',
                            num_subjobs=tasks, jobs_dir=jobs_dir,
                            processes=opts['processes'], log_subjob='%a')
        header.append(f'#SBATCH --array=0-{tasks - 1}')
        preamble = [
            'task=${SLURM_ARRAY_TASK_ID:-$1}',
            f'[ -n "$task" ] || {{ echo "usage: bash $0 TASK (0 to {tasks - 1})" >&2; exit 2; }}',
            f'first=$((task * {per_task})); last=$((first + {per_task - 1}))',
            f'[ $last -le {n - 1} ] || last={n - 1}']
        # named by its bins: another --max-array-size gives tasks other bins
        ckpt = shlex.quote(checkpoints) + '/bins-$first-$last.chk'
        line = run_command(script_path, opts, f'"$first-$last/{n}"', jobs_dir, ckpt)
        path = os.path.join(jobs_dir, 'array.sh')
        _write(path, script_text(scheduler, opts, header, line, preamble))
        todo = [t for t in range(tasks)
                if not set(range(t * per_task, min(n, (t + 1) * per_task))) <= done
                and t not in alive]
        print(f'cluf: wrote {path}: a job array of {tasks} tasks over {n} bins '
              f'({per_task} per task).', file=out)
        if todo:
            submissions.append((path, [f'--array={_ranges(todo)}'],
                                f'array tasks {_ranges(todo)}', todo))
    else:
        for i in range(n):
            header = directives(scheduler, sched_opts, target=target, subjob=i,
                                num_subjobs=n, jobs_dir=jobs_dir,
                                processes=opts['processes'])
            ckpt = os.path.join(checkpoints, f'subjob-{i}.chk')
            line = run_command(script_path, opts, f'{i}/{n}', jobs_dir,
                               shlex.quote(ckpt))
            path = os.path.join(jobs_dir, f'subjob-{i}.sh')
            _write(path, script_text(scheduler, opts, header, line))
            if i not in done and i not in alive:
                submissions.append((path, [], f'subjob {i}', [i]))
        print(f'cluf: wrote {n} {scheduler} scripts to {jobs_dir} '
              f'(subjob-0.sh ... subjob-{n - 1}.sh).', file=out)
    if done:
        print(f'cluf: {len(done)} of {n} bins are already done (cluf status '
              f'{jobs_dir}); their subjobs are not submitted. Use --fresh to '
              f'run them again.', file=out)
    if alive:
        unit = 'array tasks' if opts['array'] else 'subjobs'
        print(f'cluf: {unit} {_ranges(sorted(alive))} are still queued or running '
              f'(jobs {", ".join(sorted(set(alive.values())))}); not submitting '
              f'them again.', file=out)
    record.update(scheduler=scheduler, subjobs=n, array=opts['array'],
                  script=script_path,
                  per_task=per_task if opts['array'] else 1)
    record.setdefault('submitted', [])
    if opts['queue']:
        if not submissions:
            print('cluf: every bin is done or queued; nothing to submit.', file=out)
        for path, extra, what, units in submissions:
            job_id = submit(scheduler, path, extra, jobs_dir)
            record['submitted'].append({'what': what, 'job': job_id, 'units': units})
            state.write_json(os.path.join(jobs_dir, 'dispatch.json'), record)
            print(f'cluf: submitted {what} as job {job_id}.', file=out)
    elif submissions:
        print(f'cluf: not submitted (add --queue to submit with '
              f'{"sbatch" if scheduler == "slurm" else "qsub"}).', file=out)
    state.write_json(os.path.join(jobs_dir, 'dispatch.json'), record)
    out.flush()
    return 0


def _ranges(values: List[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``'0-2,5'``."""
    return format_bins(values, 1).rpartition('/')[0]


def in_queue(scheduler: str, record: dict) -> Dict[int, str]:
    """Subjobs (or array tasks) of ``record`` still queued or running in
    SLURM: {unit: job id}.  Empty for PBS or when squeue cannot answer."""
    jobs = {}
    for entry in record.get('submitted', []):
        for unit in entry.get('units', []):
            jobs[unit] = str(entry['job'])
    if scheduler != 'slurm' or not jobs or not shutil.which('squeue'):
        return {}
    try:
        proc = subprocess.run(['squeue', '-h', '-r', '-o', '%i', '-j',
                               ','.join(sorted(set(jobs.values())))],
                              capture_output=True, text=True, timeout=SUBMIT_TIMEOUT)
    except (OSError, subprocess.SubprocessError):
        return {}
    listed = set(proc.stdout.split())
    if record.get('array'):
        return {u: j for u, j in jobs.items() if f'{j}_{u}' in listed}
    return {u: j for u, j in jobs.items() if j in listed}


def submit(scheduler: str, path: str, extra: List[str], jobs_dir: str) -> str:
    command = ['sbatch', '--parsable'] if scheduler == 'slurm' else ['qsub']
    exe = shutil.which(command[0])
    if exe is None:
        other = 'pbs' if scheduler == 'slurm' else 'slurm'
        raise SchedulerError(
            f'{command[0]} not found on PATH, so the {scheduler} scripts in '
            f'{jobs_dir} cannot be submitted: run cluf on a {scheduler} login '
            f'node, use --scheduler {other}, or drop --queue and submit them '
            f'yourself.')
    try:
        proc = subprocess.run([exe, *command[1:], *extra, path], capture_output=True,
                              text=True, cwd=jobs_dir, timeout=SUBMIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise SchedulerError(f'{command[0]} did not answer within '
                             f'{SUBMIT_TIMEOUT} s for {path}.') from None
    if proc.returncode != 0:
        raise SchedulerError(f'{command[0]} refused {path} (exit '
                             f'{proc.returncode}): {proc.stderr.strip()}')
    return proc.stdout.strip().split(';')[0]


def _gone(marker: dict) -> bool:
    """A 'running' marker of this host whose process no longer exists."""
    if marker.get('host') != socket.gethostname() or not marker.get('pid'):
        return False
    try:
        os.kill(int(marker['pid']), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError):
        return False
    return False


def status(jobs_dir: str, out=sys.stdout) -> int:
    """Print which bins of a dispatch are done, running, failed or waiting."""
    shape_ = state.read_json(os.path.join(jobs_dir, 'state', 'shape.json'))
    if shape_ is None:
        raise OptionError(f'{jobs_dir} is not a cluf jobs folder (no '
                          f'state/shape.json): give the --jobs-dir of a dispatch.')
    total = shape_['bins']
    markers = state.read(jobs_dir)
    groups: Dict[str, List[int]] = {'done': [], 'running': [], 'failed': [], 'waiting': []}
    for b in range(total):
        groups[markers.get(b, {}).get('status', 'waiting')].append(b)
    record = state.read_json(os.path.join(jobs_dir, 'dispatch.json')) or {}
    print(f'{jobs_dir}: {total} bins of {shape_["script"]}'
          + (f' ({record["scheduler"]})' if record.get('scheduler') else ''), file=out)
    for name, bins in groups.items():
        print(f'  {name:8} {len(bins):5}' + (f'  bins {_ranges(bins)}' if bins else ''),
              file=out)
    for b in groups['failed'] + groups['running']:
        m = markers[b]
        job = f' job {m["job"]}' if m.get('job') else ''
        msg = f': {m["message"]}' if m.get('message') else ''
        if m['status'] == 'running' and _gone(m):
            msg += ' -- but that process is gone (killed?)'
        print(f'  bin {b} {m["status"]} on {m.get("host")} (pid {m.get("pid")}'
              f'{job}){msg}', file=out)
    if record.get('submitted'):
        last = record['submitted'][-1]
        print(f'  last submitted: {last["what"]} as job {last["job"]}', file=out)
        alive = in_queue(record.get('scheduler'), record)
        if alive:
            unit = 'array tasks' if record.get('array') else 'subjobs'
            print(f'  in the queue: {unit} {_ranges(sorted(alive))} (jobs '
                  f'{", ".join(sorted(set(alive.values())))})', file=out)
    out.flush()
    return 0
