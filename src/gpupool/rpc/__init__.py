"""The hub's gRPC transport (SPEC §6): HiveMind's ``nodepool`` services over the hub's services."""
