"""The job_stream command, run as users run it."""
import os
import subprocess
import sys

import pytest

from conftest import script_env


@pytest.fixture
def js(tmp_path):
    """Run ``job_stream ARGS`` with a private config dir."""
    config = tmp_path / 'config'

    def run(*args, check=True, env=None, timeout=120):
        proc = subprocess.run(
            [sys.executable, '-m', 'job_stream', *map(str, args)],
            capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
            env=script_env({'XDG_CONFIG_HOME': str(config), **(env or {})},
                           unbuffered=False),
            stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f'exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}')
        return proc
    return run


def test_help_usage_line(js):
    out = js('--help').stdout
    assert out.startswith('Usage: job_stream [OPTIONS] PROG [ARGS]...')
    assert 'config' in out and 'git-results-progress' in out


@pytest.mark.parametrize('text,message', [
    ('a cpus=2 x\n', 'Unparseable properties: x'),
    ('a cpus=2 gpus=1  # two\n', 'Unparseable property: gpus'),
    ('a\n# comment\n b cpus=1 # c\na\n', 'Duplicate host entry? a'),
])
def test_hostfile_errors(js, tmp_path, text, message):
    (tmp_path / 'hosts').write_text(text)
    p = js('--hostfile', 'hosts', 'true', check=False)
    assert p.returncode != 0
    assert message in p.stderr
    p = js('--host', ','.join(text.split('\n')[:1] + ['a'] * ('Dup' in message)),
           'true', check=False)
    assert p.returncode != 0 and message.split('?')[0] in p.stderr


def test_runs_locally_without_hostfile_and_passes_args(js, tmp_path):
    (tmp_path / 'prog.py').write_text(
        'import os, sys\nprint("ARGS", sys.argv[1:], os.environ.get("JOBS_CHECKPOINT"))\n'
        'sys.exit(3)\n')
    p = js('-c', 'ck', '--', 'python', 'prog.py', '--flag', '-x', check=False)
    assert p.returncode == 3
    assert f"ARGS ['--flag', '-x'] {tmp_path / 'ck'}" in p.stdout


def test_done_checkpoint_exits_without_running(js, tmp_path):
    (tmp_path / 'ck.done').write_text('')
    p = js('-c', 'ck', 'python', '-c', 'print("RAN")')
    assert 'RAN' not in p.stdout
    assert 'ck.done' in p.stderr and 'nothing to run' in p.stderr


def test_git_results_progress(js, tmp_path):
    assert js('git-results-progress', '-c', 'ck').stdout.strip() == '-1'
    (tmp_path / 'ck.done').write_text('')
    os.utime(tmp_path / 'ck.done', (1000, 1000))
    assert float(js('git-results-progress', '-c', 'ck').stdout) == 1000
    (tmp_path / 'ck').write_text('')
    os.utime(tmp_path / 'ck', (2000, 2000))
    assert float(js('-c', 'ck', 'git-results-progress').stdout) == 2000


def test_config_hostfile(js, tmp_path):
    assert js('config').stdout.strip() == 'hostfile='
    (tmp_path / 'hosts').write_text('localhost\n127.0.0.1 cpus=1\n')
    p = js('config', 'hostfile=hosts')
    assert p.stdout.strip() == f'hostfile={tmp_path / "hosts"}'
    assert js('config').stdout.strip() == f'hostfile={tmp_path / "hosts"}'
    # the configured hostfile is used: two ranks, the second with cpus=1
    (tmp_path / 'prog.py').write_text(
        'from job_stream.inline import getRank, getHostCpuCount, getCpuCount\n'
        'import os\n'
        'print("RANK", getRank(), getHostCpuCount(), getCpuCount(), flush=True)\n')
    p = js('python', 'prog.py')
    lines = sorted(l for l in p.stdout.splitlines() if l.startswith('RANK'))
    assert [l.split()[1] for l in lines] == ['0', '1']
    assert lines[1].split()[2] == '1'
    assert js('config', 'hostfile=').stdout.strip() == 'hostfile='
    p = js('config', 'colour=red', check=False)
    assert p.returncode != 0 and 'Unknown setting' in p.stderr


def test_unknown_program(js):
    p = js('no-such-program-here', check=False)
    assert p.returncode != 0
    assert "Program 'no-such-program-here' not found on PATH" in p.stderr


def test_allocation_hosts_from_slurm_nodelist(js, tmp_path):
    """Inside an allocation the hosts come from SLURM_JOB_NODELIST (expanded
    without scontrol when it is not installed)."""
    from job_stream.hosts import expand_nodelist
    assert expand_nodelist('n[01-03,7],gpu1') == ['n01', 'n02', 'n03', 'n7', 'gpu1']
    nodefile = tmp_path / 'nodes'
    nodefile.write_text('a\na\nb\n')
    p = subprocess.run(
        [sys.executable, '-c', 'from job_stream.hosts import allocation_hosts;'
         'print([h.name for h in allocation_hosts()])'],
        capture_output=True, text=True, timeout=60,
        env=script_env({'PBS_NODEFILE': str(nodefile)}))
    assert p.stdout.strip() == "['a', 'b']"


def test_monitor_frames_need_the_token_and_whole_lines():
    """The command's view of a rank's monitor connection: a hello split
    across reads, beats, a lost-rank line containing a 'D', a goodbye; a
    stranger (wrong token, or bytes before a hello) is dropped."""
    from job_stream.cli import _RankLink
    link = _RankLink('t0k')
    assert link.feed(b'Ht0') == [] and link.rank is None and not link.bad
    assert link.feed(b'k 0 nodeA\n..') == [('beat', ''), ('beat', '')]
    assert (link.rank, link.host) == (0, 'nodeA')
    lost = b'Ljob_stream: rank 0 (host nodeA) lost rank 2 (host nodeD): ...\n'
    assert link.feed(lost + b'D') == [('lost', lost[1:-1].decode()), ('bye', '')]
    assert link.bye and not link.bad
    for stranger in (b'Hwrong 1 x\n', b'HEAD / HTTP/1.0\r\n', b'D'):
        other = _RankLink('t0k')
        other.feed(stranger)
        assert other.bad and other.rank is None
