"""The bundled WeChat API simulator: a real HTTP server that tests, the demo and users point at.

It answers the token endpoints, a third-party platform's authorizer list and authorizer info and
the QR-code jump rule endpoints as api/REFERENCE.md says, from an in-memory world deterministic for
a seed, and offers an admin API (``/sim/...``) to shape that world, move its clock and inject
faults::

    with start_simulator(world=default_world()) as sim:
        sim.admin.add_fault(endpoint="qrcodejumpget", page_num=2, errcode=-1)
        ...  # point qrsync's api.base_url at sim.url
"""

from __future__ import annotations

from qrsync.simulator.admin import SimulatorAdmin, SimulatorAdminError
from qrsync.simulator.default_world import default_world
from qrsync.simulator.server import RunningSimulator, start_simulator
from qrsync.simulator.world import WorldError, load_world_file

__all__ = [
    "RunningSimulator",
    "SimulatorAdmin",
    "SimulatorAdminError",
    "WorldError",
    "default_world",
    "load_world_file",
    "start_simulator",
]
