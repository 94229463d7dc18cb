"""``cluf``: call one function on many arguments, on local cores or a cluster.

cluster-func's interface on job_stream's engine.  A script defines::

    def target(x, y=0): ...
    args = ((i, i + 1) for i in range(1000))   # or a function returning one

and ``cluf script.py`` calls ``target`` on every value of ``args`` on all
local cores; ``cluf script.py --nodes 10 --queue`` submits 10 SLURM (or PBS)
subjobs, each running one bin of the arguments.  Modules: :mod:`.bins`
(binning), :mod:`.options` (option sources), :mod:`.direct` (a local run),
:mod:`.dispatch` (scripts, submission, status), :mod:`.state` (per-bin
markers), :mod:`.cli` (the command).  See docs/cluf.md.
"""
