"""Kill -9 the primary at random moments and resume until done.

The pipeline (``checkpoint_helpers.KILL_SCRIPT``) has jobs in workers, a
nested frame (a loop per item) and, in ``reduce`` mode, a global reducer; in
``stream`` mode every item's result goes to ``@w.result``, which appends it
to a file.  The final result must equal the uninterrupted run's, nothing may
be lost, and ``@w.result`` may see a result again at most once per kill (the
handler that was running).  tests/test_checkpoint_mpi.py runs the same loop
under ``mpiexec``.
"""
import pytest

from checkpoint_helpers import kill_loop_test


@pytest.mark.parametrize('mode', ['reduce', 'stream'])
def test_kill9_loop_fast(tmp_path, mode):
    kill_loop_test(tmp_path, mode, n=150, kills=3, seed=mode)


@pytest.mark.slow
@pytest.mark.parametrize('mode', ['reduce', 'stream'])
def test_kill9_loop_many(tmp_path, mode):
    kill_loop_test(tmp_path, mode, n=600, kills=20, seed=mode + '-many')
