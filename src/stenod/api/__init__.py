"""The HTTP API: routes translate HTTP to service calls and back, nothing more."""

from stenod.api.app import create_app

__all__ = ["create_app"]
