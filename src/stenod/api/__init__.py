"""The HTTP API: routes translate HTTP to service calls and back, nothing more."""

from stenod.api.app import begin_drain, create_app
from stenod.api.connections import ConnectionLimits, LimitedHttpToolsProtocol
from stenod.api.state import AppState

__all__ = ["AppState", "ConnectionLimits", "LimitedHttpToolsProtocol", "begin_drain", "create_app"]
