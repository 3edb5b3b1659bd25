"""The sandbox: a built-in verifiable task and a tiny base model, so the whole loop runs on a CPU in minutes and every
claim can be checked against ground truth.

- ``task``: chained sums written step by step, the exact verifier, the first wrong character (critical token),
  planted errors and the rubric judge's written check (re-exported here: ``sandbox.solve``, ``sandbox.verify``, ...);
- ``corpus``: the base model's training examples;
- ``tokenizer``, ``config``, ``model``, ``cache``: the character tokenizer, the build settings (``model.sandbox``),
  the builder and the cache of built models.
"""

from selfalign.sandbox.task import *  # noqa: F403
from selfalign.sandbox.task import __all__  # noqa: F401
