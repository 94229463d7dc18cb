"""Test clusters on this machine, from ../shared/tools (root needed):
ssh hosts in network namespaces (netns-cluster) and a single-node SLURM
(slurm-up / slurm-down)."""
import contextlib
import os
import pathlib
import re
import subprocess

import pytest

TOOLS = pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'tools'


class NetnsCluster:
    """One netns-cluster, told apart from others by its variables
    (``NETNS_CLUSTER_STATE``, ``_PREFIX``, ``_NET``)."""

    def __init__(self, variables: dict):
        self.variables = variables

    def tool(self, *args, timeout=300, check=True):
        """Run ``netns-cluster ARGS`` on this cluster."""
        env = dict(os.environ, **self.variables)
        return subprocess.run([str(TOOLS / 'netns-cluster'), *args], env=env,
                              capture_output=True, text=True, timeout=timeout,
                              check=check)

    @contextlib.contextmanager
    def up(self, hosts: int = 3):
        """Start the hosts; yield the environment that uses them (Hydra's
        launcher variables); remove the cluster at the end."""
        if os.geteuid() != 0:
            pytest.fail('the multi-host tests need root (netns-cluster)')
        self.tool('up', str(hosts))
        try:
            env = {}
            for line in open(self.variables['NETNS_CLUSTER_STATE'] + '/env'):
                m = re.match(r'export (\w+)=(.*)', line.strip())
                if m:
                    env[m.group(1)] = m.group(2).strip('"')
            yield env
        finally:
            self.tool('down', timeout=120, check=False)


@contextlib.contextmanager
def slurm_cluster(keep_running: bool = False):
    """Start the single-node SLURM test cluster; stop it at the end (unless
    ``keep_running`` and it was already up: someone else's run uses it)."""
    was_up = False
    if keep_running:
        try:
            was_up = 'is UP' in subprocess.run(
                ['scontrol', 'ping'], capture_output=True, text=True,
                timeout=30).stdout
        except OSError:  # scontrol not installed yet
            pass
    up = subprocess.run([str(TOOLS / 'slurm-up')], capture_output=True, text=True,
                        timeout=600)
    assert up.returncode == 0, up.stderr
    assert 'slurm ready' in up.stdout
    try:
        yield
    finally:
        if not was_up:
            subprocess.run([str(TOOLS / 'slurm-down')], capture_output=True,
                           timeout=120)
