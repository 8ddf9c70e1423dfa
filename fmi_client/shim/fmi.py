"""``import fmi`` for workers written for FMI: this module *is* ``fmi_client.compat``.

Put this directory on ``sys.path`` (the pipeline's worker and local runner do; the
Lambda layer built with ``fmi-layer build --fmi-module`` holds it as ``python/fmi.py``),
and ``fmi.Communicator(...)``, ``fmi.hints.fast``, ``fmi.func(fmi.op.sum)`` and
``fmi.types(fmi.datatypes.double)`` are fmi_client's, with no edit to the worker.
"""

import sys

import fmi_client.compat as _compat

sys.modules[__name__] = _compat
