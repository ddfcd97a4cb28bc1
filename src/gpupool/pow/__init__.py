"""PoC generation on a node: the engine, the node's PoW API, and the small node's delegation client."""
