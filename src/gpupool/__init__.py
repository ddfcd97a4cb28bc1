"""gpupool: a decentralized GPU compute pool."""

__version__ = "0.1.0"
