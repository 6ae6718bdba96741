"""Everything that imports Ray: the only package that does (``tests/unit/project/test_layout.py``).

========================  =================================================================
:mod:`.start`             start a local Ray or join a cluster (token, quick refusal, quiet logs)
:mod:`.registration`      a local start without Ray's 1 s sleep on the raylet's registration
:mod:`.executor`          task mode: :class:`RayExecutor`, one Ray task per batch
:mod:`.probe`             Ray as monitoring sees it: connected, resources
:mod:`.actor`             actor mode's actor: a whole worker in a Ray actor
:mod:`.placement`         how many actors, and what each asks Ray for
:mod:`.reports`           the actors' reports added up: snapshot, tally, outages
:mod:`.pool`              actor mode: :class:`ActorPool` starts and supervises the actors
:mod:`.inline_start`      the worker process handles entries while Ray starts
========================  =================================================================

The pipeline (:mod:`streamtasks.worker`) sees Ray only through its
:class:`~streamtasks.worker.executors.Executor` and
:class:`~streamtasks.worker.executors.Cluster` protocols; :mod:`streamtasks.serve` puts them
together.
"""

from .executor import RayExecutor
from .pool import ActorPool
from .probe import RayProbe

__all__ = ["ActorPool", "RayExecutor", "RayProbe"]
