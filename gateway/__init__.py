"""iii-gateway: an engine for the iii state model that joins many engines into a federation."""

__version__ = "0.1.0"
