"""Reaching nodes: one Transport per node (SSH or local), driven together by the Fleet."""

from clusterprep.fleet.fleet import Fleet, FleetResult, ProbeResult
from clusterprep.fleet.options import HOST_KEY_POLICIES, SshOptions
from clusterprep.fleet.transport import CommandResult

__all__ = [
    "HOST_KEY_POLICIES",
    "CommandResult",
    "Fleet",
    "FleetResult",
    "ProbeResult",
    "SshOptions",
]
