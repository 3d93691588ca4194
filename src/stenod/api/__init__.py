"""The HTTP API: routes translate HTTP to service calls and back, nothing more."""

from stenod.api.app import begin_drain, create_app

__all__ = ["begin_drain", "create_app"]
