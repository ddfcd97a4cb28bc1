"""Builders for signed node requests, shared by the registry, matching and node tests."""

from __future__ import annotations

from typing import Any

from gpupool import crypto
from gpupool.core.ports import Clock

OWNER = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
OTHER_OWNER = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"


def gpu(index: int, vram_gb: float = 80.0, name: str = "NVIDIA H100 80GB HBM3") -> dict[str, Any]:
    return {
        "index": index,
        "uuid": f"GPU-{index:08x}-0000-0000-0000-000000000000",
        "name": name,
        "vram_gb": vram_gb,
        "compute_capability": "9.0",
    }


def registration(
    key: crypto.KeyPair, clock: Clock, *, owner: str = OWNER, age_s: float = 0.0, **fields: Any
) -> dict[str, Any]:
    """A signed ``/v1/miners/register`` body; ``fields`` override the defaults before signing."""
    body: dict[str, Any] = {
        "pubkey": key.pubkey,
        "owner": owner,
        "addr": "10.0.0.7:8080",
        "proto": "http",
        "gpus": [gpu(0)],
        "cpu_cores": 32,
        "ram_gb": 256,
        "price_micro_per_ksec": 1_000_000,
        "max_parallel": 2,
        "region": "eu-west",
        "tags": ["llm"],
        "capabilities": ["inference"],
    }
    body.update(fields)
    return crypto.sign_body(key, crypto.KIND_REGISTRATION, body, created_at=int(clock.now() - age_s))


def worker(key: crypto.KeyPair, clock: Clock, *, owner: str = OWNER, signed: bool = True) -> dict[str, Any]:
    body = {"pubkey": key.pubkey, "owner": owner, "node_type": "node-H100x1"}
    return (
        crypto.sign_body(key, crypto.KIND_REGISTRATION, body, created_at=int(clock.now())) if signed else body
    )
