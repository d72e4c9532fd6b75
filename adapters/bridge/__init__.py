"""The Bridge adapter: state kept on upstream gateways, reached over the federation link."""

from adapters.bridge.adapter import BridgeAdapter

__all__ = ["BridgeAdapter"]
