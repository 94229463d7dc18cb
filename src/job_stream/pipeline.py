"""The pipeline graph: modules, stages, and the fused job chains that batches run.

A :class:`Pipeline` is a tree of :class:`Module` objects.  A module holds an
ordered list of stages (each a :class:`JobStage` or a nested module) and at most
one *closer*: a :class:`ReducerSpec` or a :class:`FrameSpec`.  Front ends build
the tree; :meth:`Pipeline.compile` validates it once and turns it into the flat
form the Processor routes on:

* **nodes** - the places work can be sent to.  A node is a job *chain* (a run
  of consecutive jobs that one batch runs start to finish inside one worker),
  the entry of a nested module, the closer of a module, or the output.
* stable integer ids, identical on every process that builds the same script,
  and a structural fingerprint (for checkpoints and MPI version checks).

Example::

    >>> p = Pipeline()
    >>> p.root.stages.append(JobStage(lambda x: x + 1, name='inc'))
    >>> p.compile().chains[0].names
    ['inc']
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union


@dataclass
class JobStage:
    """One job: ``func(work)`` or a :class:`job_stream.common.Job` subclass."""
    func: Any
    name: str
    use_multiprocessing: bool = True
    timeout: Optional[float] = None
    config: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)


@dataclass
class ReducerSpec:
    """Closes a module: reduces all work of one reduction into a store.

    ``factory()`` returns the object whose ``handleInit/handleAdd/handleDone``
    methods implement the reduction (see :mod:`job_stream.common`).
    """
    factory: Callable[[], Any]
    name: str
    config: dict = field(default_factory=dict)


@dataclass
class FrameSpec(ReducerSpec):
    """Closes a module as a loop: ``handleFirst`` / ``handleNext`` / ``handleDone``."""


@dataclass
class Module:
    """An ordered list of stages closed by at most one reducer or frame.

    ``gather`` marks a module that reduces *all* work its parent's reduction
    feeds it as one reduction (instead of one reduction per entering item).
    The inline API uses it for a top-level ``reduce`` followed by more stages.
    """
    stages: list = field(default_factory=list)
    closer: Optional[ReducerSpec] = None
    gather: bool = False


Stage = Union[JobStage, Module]


# -- compiled form --------------------------------------------------------
OUTPUT = -1


@dataclass
class Chain:
    """A run of consecutive jobs fused into one unit of dispatch.

    A batch sent to a chain runs every job of it, in order, inside one worker;
    ``next`` is the node its outputs are routed to.
    """
    id: int
    jobs: list  # list[JobStage]
    next: int = OUTPUT
    depth: int = 0  # position in pipeline order; deeper runs first

    @property
    def names(self) -> list:
        return [j.name for j in self.jobs]

    @property
    def name(self) -> str:
        return ' -> '.join(self.names)

    @property
    def use_multiprocessing(self) -> bool:
        return self.jobs[0].use_multiprocessing

    @property
    def timeout(self) -> Optional[float]:
        return self.jobs[0].timeout


@dataclass
class Enter:
    """Work arriving at a nested module with a closer starts a reduction."""
    id: int
    module: Module
    closer: Optional[ReducerSpec]
    first: int = OUTPUT  # node of the module's first stage (or its close)
    close: int = OUTPUT  # the Close node of this module
    gather: bool = False


@dataclass
class Close:
    """Work leaving a module's last stage is added to its reduction's store."""
    id: int
    closer: ReducerSpec
    first: int = OUTPUT  # where recurred work goes
    next: int = OUTPUT   # where emitted work goes (in the parent reduction)


class CompiledPipeline:
    """The validated, flattened pipeline.  Built by :meth:`Pipeline.compile`.

    Attributes:
        nodes: list indexed by node id (Chain, Enter or Close objects).
        chains: only the Chain nodes.
        root_first: the node initial work is sent to.
        root_close: the root module's Close node, or None.
        fingerprint: hex digest of the structure (names, kinds, nesting).
    """

    def __init__(self, pipeline: 'Pipeline'):
        self.nodes: list = []
        self._shape: list = []
        self.root_first, self.root_close = self._module(pipeline.root, OUTPUT)
        self.chains = [n for n in self.nodes if isinstance(n, Chain)]
        self.fingerprint = hashlib.sha256(
            repr(self._shape).encode()).hexdigest()[:16]

    # The builder walks modules back to front so that every stage knows the
    # node its output goes to.
    def _module(self, module: Module, after: int) -> tuple:
        """Compile a module; return (its first node, its Close node or None)."""
        self._shape.append(('module', type(module.closer).__name__,
                            module.closer.name if module.closer else None,
                            module.gather))
        close = None
        if module.closer is not None:
            close = Close(len(self.nodes), module.closer, next=after)
            self.nodes.append(close)
            exit_to = close.id
        else:
            exit_to = after
        first = self._stages(module.stages, exit_to)
        if close is not None:
            close.first = first
        return first, (close.id if close else None)

    def _stages(self, stages: list, exit_to: int) -> int:
        """Compile stages back to front; return the node of the first one."""
        nxt = exit_to
        chain: list = []

        def flush():
            nonlocal nxt, chain
            if chain:
                node = Chain(len(self.nodes), list(reversed(chain)), next=nxt)
                self.nodes.append(node)
                nxt = node.id
                chain = []

        for stage in reversed(stages):
            if isinstance(stage, JobStage):
                self._shape.append(('job', stage.name, stage.use_multiprocessing,
                                    stage.timeout))
                # Fusion boundaries: a change of where the job runs, and jobs
                # with a timeout (the deadline is per call, so they run alone).
                if chain and (chain[-1].use_multiprocessing
                              != stage.use_multiprocessing
                              or stage.timeout is not None
                              or chain[-1].timeout is not None):
                    flush()
                chain.append(stage)
            else:
                flush()
                first, close = self._module(stage, nxt)
                if stage.closer is None:
                    # A module without a closer is only grouping.
                    nxt = first
                else:
                    enter = Enter(len(self.nodes), stage, stage.closer,
                                  first=first, close=close, gather=stage.gather)
                    self.nodes.append(enter)
                    nxt = enter.id
        flush()
        return nxt

    def finish(self) -> 'CompiledPipeline':
        # Depth = reverse creation order, so later stages (created first,
        # since we build back to front) are picked first: depth-first.
        for chain in self.chains:
            chain.depth = len(self.nodes) - chain.id
        return self


class Pipeline:
    """A tree of modules; front ends append stages to ``root``."""

    def __init__(self):
        self.root = Module()

    def compile(self) -> CompiledPipeline:
        """Validate and flatten; the result is what a run executes."""
        return CompiledPipeline(self).finish()
