"""The GPU inventory from a DStack GPU service (seed 000) instead of NVML.

Used when ``DSTACK_BACKEND_DSTACK_URL`` is set: the node reports what that service lists.
"""

from __future__ import annotations

import re

import httpx
from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr, ValidationError

from gpupool.errors import InvalidInput, Unavailable
from gpupool.node.gpu import GpuInfo, Inventory, host_resources


class _DStackGpu(BaseModel):
    model_config = ConfigDict(extra="ignore")
    slot: StrictStr
    product_id: StrictStr
    description: StrictStr
    is_free: StrictBool


class _DStackGpus(BaseModel):
    model_config = ConfigDict(extra="ignore")
    gpus: list[_DStackGpu]
    allow_attach_all: StrictBool


_NOMINAL_GB = re.compile(r"(\d+(?:\.\d+)?)\s*GB\b", re.IGNORECASE)


def fetch_dstack_inventory(url: str, timeout_s: float = 5.0) -> Inventory:
    """The inventory a DStack service lists at ``GET {url}/prpc/ListGpus?json`` (``unix://path`` too).

    DStack gives slot, product id, description and whether each GPU is free: no UUID, no memory size,
    no compute capability. ``vram_gb`` is the nominal size printed in the description ("… 80GB") when
    there is one, else None; the other unknowns stay None. Unreachable or garbage: ``Unavailable``.
    """
    base = url.strip().rstrip("/")
    transport: httpx.HTTPTransport | None = None
    if base.startswith("unix://"):
        transport = httpx.HTTPTransport(uds=base.removeprefix("unix://"))
        target = "http://localhost/prpc/ListGpus?json"
    elif base.startswith(("http://", "https://")):
        target = f"{base}/prpc/ListGpus?json"
    else:
        raise InvalidInput(
            f"DSTACK_BACKEND_DSTACK_URL must start with http://, https:// or unix://, got {url!r}",
            field="DSTACK_BACKEND_DSTACK_URL",
        )
    try:
        with httpx.Client(transport=transport, timeout=timeout_s) as client:
            response = client.get(target)
    except httpx.HTTPError as exc:
        raise Unavailable(f"DStack GPU service at {url} cannot be reached: {exc!r}") from exc
    if response.status_code != 200:
        raise Unavailable(f"DStack GPU service at {url} answered HTTP {response.status_code}")
    try:
        listing = _DStackGpus.model_validate_json(response.content)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise Unavailable(f"DStack GPU service at {url} answered garbage: {where}: {first['msg']}") from exc
    return _dstack_inventory(listing)


def _dstack_inventory(listing: _DStackGpus) -> Inventory:
    gpus = tuple(
        GpuInfo(
            i,
            None,
            g.description,
            vram_gb=_nominal_gb(g.description),
            pci_bus_id=g.slot,
            product_id=g.product_id,
            is_free=g.is_free,
        )
        for i, g in enumerate(listing.gpus)
    )
    cores, threads, ram_gb = host_resources()
    return Inventory(
        kind="gpu" if gpus else "cpu",
        source="dstack",
        cpu_cores=cores,
        cpu_threads=threads,
        ram_gb=ram_gb,
        gpus=gpus,
        allow_attach_all=listing.allow_attach_all,
        detail=None if gpus else "the DStack service lists no GPU: CPU node",
    )


def _nominal_gb(description: str) -> float | None:
    match = _NOMINAL_GB.search(description)
    return None if match is None else float(match.group(1))
