"""tnerv: neural video representation and compression (T-NeRV and the NeRV family)."""

__version__ = "0.1.0"
