"""Proof-of-compute generation on a node: the engine, its HTTP API and the delegation client."""
