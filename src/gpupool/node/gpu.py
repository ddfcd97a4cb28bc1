"""What this machine can offer the pool: its GPUs (through NVML or a DStack service) and its CPU and RAM.

The node agent registers with ``registration_gpus(read_inventory())`` and sends
``heartbeat_gpus(read_telemetry())`` in every heartbeat, so the hub sees the figures NVML reports and
nothing else. Honesty rules:

- NVML is imported lazily (``pynvml`` from nvidia-ml-py) or passed in, e.g. ``ReplayNvml`` built from
  real H100 readings; both go through the same code.
- No NVML library, no driver, or no NVIDIA GPU: a CPU node (``kind="cpu"``, no GPUs), never a made-up
  GPU. NVML present but failing in another way (permissions, a lost GPU): ``Unavailable``, because
  registering a GPU machine as a CPU node would be just as false.
- A field one GPU refuses (``NVMLError_NotSupported`` for power, say) is None; a GPU whose identity or
  memory cannot be read is left out and named in ``Inventory.detail``.

Units: memory in MiB (what nvidia-smi prints; heartbeat ``*_mb`` fields carry MiB), ``vram_gb``,
``ram_gb`` and ``mem_free_gb`` in decimal GB (10⁹ bytes), power in W (NVML gives mW), clocks in MHz.
NVML's v1 memory ``used`` is ``total - free`` and includes the driver's reservation (480 MiB on an H100),
which nvidia-smi shows apart; ``free`` is what a task can still allocate.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, cast

import psutil

from gpupool.errors import Unavailable

log = logging.getLogger(__name__)

MIB = 1024**2
GB = 10**9
_T = TypeVar("_T")


class NvmlModule(Protocol):
    """The part of pynvml this module calls; the ``pynvml`` module and ``ReplayNvml`` both fit it."""

    @property
    def NVMLError(self) -> type[Exception]: ...
    @property
    def NVMLError_LibraryNotFound(self) -> type[Exception]: ...
    @property
    def NVMLError_DriverNotLoaded(self) -> type[Exception]: ...
    @property
    def NVML_TEMPERATURE_GPU(self) -> int: ...
    @property
    def NVML_CLOCK_GRAPHICS(self) -> int: ...
    @property
    def NVML_CLOCK_SM(self) -> int: ...
    @property
    def NVML_CLOCK_MEM(self) -> int: ...

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlSystemGetDriverVersion(self) -> str | bytes: ...
    def nvmlSystemGetCudaDriverVersion(self) -> int: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int, /) -> Any: ...
    def nvmlDeviceGetName(self, handle: Any, /) -> str | bytes: ...
    def nvmlDeviceGetUUID(self, handle: Any, /) -> str | bytes: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any, /) -> Any: ...
    def nvmlDeviceGetUtilizationRates(self, handle: Any, /) -> Any: ...
    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int, /) -> int: ...
    def nvmlDeviceGetPowerUsage(self, handle: Any, /) -> int: ...
    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any, /) -> int: ...
    def nvmlDeviceGetClockInfo(self, handle: Any, clock_type: int, /) -> int: ...
    def nvmlDeviceGetMaxClockInfo(self, handle: Any, clock_type: int, /) -> int: ...
    def nvmlDeviceGetCudaComputeCapability(self, handle: Any, /) -> tuple[int, int]: ...
    def nvmlDeviceGetMigMode(self, handle: Any, /) -> Any: ...
    def nvmlDeviceGetPciInfo(self, handle: Any, /) -> Any: ...
    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any, /) -> list[Any]: ...
    def nvmlDeviceGetProcessUtilization(self, handle: Any, timestamp: int, /) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """A compute process holding memory on a GPU (host pid)."""

    pid: int
    used_memory_mib: int | None


@dataclass(frozen=True, slots=True)
class GpuTelemetry:
    """One GPU's changing readings; None where the driver would not say."""

    index: int
    uuid: str | None
    memory_total_mib: int | None
    memory_used_mib: int | None
    memory_free_mib: int | None
    util_gpu_pct: int | None
    util_memory_pct: int | None
    temperature_c: int | None
    power_draw_w: float | None
    power_limit_w: float | None
    clock_sm_mhz: int | None
    clock_mem_mhz: int | None
    clock_graphics_mhz: int | None
    processes: tuple[GpuProcess, ...] | None


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One GPU as registered: identity and capability, plus the readings taken with it (NVML only)."""

    index: int
    uuid: str | None
    name: str
    memory_total_mib: int | None = None
    vram_gb: float | None = None
    compute_capability: str | None = None
    mig_enabled: bool | None = None
    pci_bus_id: str | None = None
    product_id: str | None = None  # "vendor:device" in hex, as lspci and DStack print it: "10de:2330"
    max_clock_sm_mhz: int | None = None
    max_clock_mem_mhz: int | None = None
    is_free: bool | None = None
    telemetry: GpuTelemetry | None = None


@dataclass(frozen=True, slots=True)
class Inventory:
    """What the node offers; ``kind`` is "gpu" exactly when ``gpus`` is not empty."""

    kind: Literal["gpu", "cpu"]
    source: Literal["nvml", "dstack", "none"]
    cpu_cores: int
    cpu_threads: int
    ram_gb: float
    gpus: tuple[GpuInfo, ...] = ()
    driver_version: str | None = None
    cuda_version: str | None = None
    allow_attach_all: bool = False
    detail: str | None = None  # why this is a CPU node, or which GPUs were left out

    def __post_init__(self) -> None:
        if (self.kind == "gpu") != bool(self.gpus):
            raise ValueError(f"an inventory of kind {self.kind!r} cannot hold {len(self.gpus)} GPUs")


class _NoNvml(Exception):
    """NVML cannot run here (no library, no driver): this is a CPU node, not a fault."""


# -- NVML ------------------------------------------------------------------------------------------------


def open_nvml(fake_fixture_dir: str | Path | None = None) -> NvmlModule | None:
    """The NVML to use: a replay of recorded readings when given a fixture dir, else pynvml if installed."""
    if fake_fixture_dir:
        from gpupool.node.nvml_replay import ReplayNvml

        return ReplayNvml(fake_fixture_dir)
    return _import_pynvml()


def _import_pynvml() -> NvmlModule | None:
    try:
        return cast(NvmlModule, importlib.import_module("pynvml"))
    except ImportError:
        return None


@contextmanager
def _session(nvml: NvmlModule) -> Iterator[None]:
    """nvmlInit … nvmlShutdown, always paired; sorts init failures into "no NVML" and "broken NVML"."""
    try:
        nvml.nvmlInit()
    except (nvml.NVMLError_LibraryNotFound, nvml.NVMLError_DriverNotLoaded) as exc:
        raise _NoNvml(f"NVML unavailable ({exc}): no NVIDIA driver on this machine") from exc
    except nvml.NVMLError as exc:
        raise Unavailable(f"GPU inventory unreadable: nvmlInit failed: {exc}") from exc
    try:
        yield
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError as exc:
            log.warning("nvmlShutdown failed: %s", exc)


def _field(nvml: NvmlModule, read: Callable[[], _T]) -> _T | None:
    """One reading, or None when the driver refuses it (NotSupported, NoPermission …)."""
    try:
        return read()
    except nvml.NVMLError as exc:
        log.debug("NVML reading refused: %s", exc)
        return None


def _device_count(nvml: NvmlModule) -> int:
    try:
        return int(nvml.nvmlDeviceGetCount())
    except nvml.NVMLError as exc:
        raise Unavailable(f"GPU inventory unreadable: nvmlDeviceGetCount failed: {exc}") from exc


def read_inventory(nvml: NvmlModule | None = None) -> Inventory:
    """The node's inventory through NVML (pynvml when ``nvml`` is None); a CPU node without NVML."""
    module = nvml if nvml is not None else _import_pynvml()
    if module is None:
        return _cpu_inventory("NVML is not installed (nvidia-ml-py): CPU node")
    try:
        with _session(module):
            return _read_nvml_inventory(module)
    except _NoNvml as exc:
        return _cpu_inventory(f"{exc}: CPU node")


def _read_nvml_inventory(nvml: NvmlModule) -> Inventory:
    count = _device_count(nvml)
    if count == 0:
        return _cpu_inventory("NVML found no NVIDIA GPU: CPU node")
    gpus: list[GpuInfo] = []
    skipped: list[str] = []
    for index in range(count):
        try:
            gpus.append(_read_gpu(nvml, index))
        except nvml.NVMLError as exc:
            log.warning("GPU %d left out of the inventory: %s", index, exc)
            skipped.append(f"GPU {index} unreadable: {exc}")
    if not gpus:
        raise Unavailable(f"GPU inventory unreadable: {'; '.join(skipped)}")
    driver = _field(nvml, nvml.nvmlSystemGetDriverVersion)
    cuda = _field(nvml, nvml.nvmlSystemGetCudaDriverVersion)
    cores, threads, ram_gb = host_resources()
    return Inventory(
        kind="gpu",
        source="nvml",
        cpu_cores=cores,
        cpu_threads=threads,
        ram_gb=ram_gb,
        gpus=tuple(gpus),
        driver_version=None if driver is None else _text(driver),
        cuda_version=None if cuda is None else f"{cuda // 1000}.{cuda % 1000 // 10}",
        allow_attach_all=True,  # every GPU NVML shows can go to one task
        detail="; ".join(skipped) or None,
    )


def _read_gpu(nvml: NvmlModule, index: int) -> GpuInfo:
    """Identity, name and memory must read (NVMLError otherwise); every other field may be None."""
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    uuid = _text(nvml.nvmlDeviceGetUUID(handle))
    name = _text(nvml.nvmlDeviceGetName(handle))
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    telemetry = _read_telemetry(nvml, index, handle, uuid, memory)
    capability = _field(nvml, lambda: nvml.nvmlDeviceGetCudaComputeCapability(handle))
    mig = _field(nvml, lambda: nvml.nvmlDeviceGetMigMode(handle))
    pci = _field(nvml, lambda: nvml.nvmlDeviceGetPciInfo(handle))
    processes = telemetry.processes
    return GpuInfo(
        index=index,
        uuid=uuid,
        name=name,
        memory_total_mib=telemetry.memory_total_mib,
        vram_gb=round(int(memory.total) / GB, 2),
        compute_capability=None if capability is None else f"{capability[0]}.{capability[1]}",
        mig_enabled=None if mig is None else bool(int(mig[0])),
        pci_bus_id=None if pci is None else _text(pci.busId),
        product_id=None if pci is None else _product_id(int(pci.pciDeviceId)),
        max_clock_sm_mhz=_field(nvml, lambda: nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM)),
        max_clock_mem_mhz=_field(nvml, lambda: nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_MEM)),
        is_free=None if processes is None else not processes,
        telemetry=telemetry,
    )


def read_telemetry(nvml: NvmlModule | None = None) -> list[GpuTelemetry]:
    """Current readings of every GPU (empty on a CPU node); for heartbeats and the dashboard."""
    module = nvml if nvml is not None else _import_pynvml()
    if module is None:
        return []
    try:
        with _session(module):
            readings = []
            for index in range(_device_count(module)):
                try:
                    handle = module.nvmlDeviceGetHandleByIndex(index)
                except module.NVMLError as exc:
                    log.warning("GPU %d has no handle, no telemetry: %s", index, exc)
                    continue
                readings.append(_read_telemetry(module, index, handle, _uuid_or_none(module, handle), None))
            return readings
    except _NoNvml:
        return []


def _uuid_or_none(nvml: NvmlModule, handle: Any) -> str | None:
    uuid = _field(nvml, lambda: nvml.nvmlDeviceGetUUID(handle))
    return None if uuid is None else _text(uuid)


def _read_telemetry(nvml: NvmlModule, index: int, handle: Any, uuid: str | None, memory: Any) -> GpuTelemetry:
    if memory is None:
        memory = _field(nvml, lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
    util = _field(nvml, lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
    processes = _field(nvml, lambda: nvml.nvmlDeviceGetComputeRunningProcesses(handle))
    return GpuTelemetry(
        index=index,
        uuid=uuid,
        memory_total_mib=None if memory is None else to_mib(memory.total),
        memory_used_mib=None if memory is None else to_mib(memory.used),
        memory_free_mib=None if memory is None else to_mib(memory.free),
        util_gpu_pct=None if util is None else int(util.gpu),
        util_memory_pct=None if util is None else int(util.memory),
        temperature_c=_field(nvml, lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
        power_draw_w=to_watts(_field(nvml, lambda: nvml.nvmlDeviceGetPowerUsage(handle))),
        power_limit_w=to_watts(_field(nvml, lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle))),
        clock_sm_mhz=_field(nvml, lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)),
        clock_mem_mhz=_field(nvml, lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM)),
        clock_graphics_mhz=_field(
            nvml, lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_GRAPHICS)
        ),
        processes=None
        if processes is None
        else tuple(GpuProcess(int(p.pid), _mib_or_none(p.usedGpuMemory)) for p in processes),
    )


def process_usage(
    nvml: NvmlModule | None, pids: Iterable[int], *, since_us: int = 0
) -> dict[int, tuple[float | None, int | None]]:
    """``{pid: (gpu_util_pct, vram_mib)}`` for those of ``pids`` running on a GPU, for task usage reports.

    Utilisation is the mean of NVML's per-process SM samples newer than ``since_us`` (0 = all kept);
    where the driver keeps none, the device's utilisation is attributed to each process on it (tasks
    hold whole GPUs). A process on several GPUs: utilisation averaged, memory summed.
    """
    wanted = set(pids)
    module = nvml if nvml is not None else _import_pynvml()
    if module is None or not wanted:
        return {}
    found: dict[int, list[tuple[float | None, int | None]]] = {}
    try:
        with _session(module):
            for index in range(_device_count(module)):
                for pid, reading in _usage_on_gpu(module, index, wanted, since_us).items():
                    found.setdefault(pid, []).append(reading)
    except _NoNvml:
        return {}
    result: dict[int, tuple[float | None, int | None]] = {}
    for pid, readings in found.items():
        utils = [u for u, _ in readings if u is not None]
        vrams = [v for _, v in readings if v is not None]
        result[pid] = (sum(utils) / len(utils) if utils else None, sum(vrams) if vrams else None)
    return result


def _usage_on_gpu(
    nvml: NvmlModule, index: int, wanted: set[int], since_us: int
) -> dict[int, tuple[float | None, int | None]]:
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        processes = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except nvml.NVMLError as exc:
        log.warning("GPU %d: no process list: %s", index, exc)
        return {}
    mine = [p for p in processes if int(p.pid) in wanted]
    if not mine:
        return {}
    samples = _field(nvml, lambda: nvml.nvmlDeviceGetProcessUtilization(handle, since_us))
    device_util: float | None = None
    if samples is None:
        util = _field(nvml, lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
        device_util = None if util is None else float(util.gpu)
    usage: dict[int, tuple[float | None, int | None]] = {}
    for proc in mine:
        pid = int(proc.pid)
        if samples is None:
            gpu_util = device_util
        else:
            own = [min(100, max(0, int(s.smUtil))) for s in samples if int(s.pid) == pid]
            gpu_util = sum(own) / len(own) if own else 0.0  # no sample: idle over the window
        usage[pid] = (gpu_util, _mib_or_none(proc.usedGpuMemory))
    return usage


# -- CPU host ---------------------------------------------------------------------------------------------


def host_resources() -> tuple[int, int, float]:
    """(physical cores, logical CPUs, RAM in GB) of this machine."""
    threads = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    cores = psutil.cpu_count(logical=False) or threads
    return cores, threads, round(psutil.virtual_memory().total / GB, 2)


def _cpu_inventory(detail: str) -> Inventory:
    cores, threads, ram_gb = host_resources()
    return Inventory(
        kind="cpu", source="none", cpu_cores=cores, cpu_threads=threads, ram_gb=ram_gb, detail=detail
    )


# -- what goes on the wire --------------------------------------------------------------------------------


def registration_gpus(inventory: Inventory) -> list[dict[str, Any]]:
    """``gpus`` of ``POST /v1/miners/register``; an unknown size is sent as 0 GB, never guessed upward.
    A GPU DStack reports as not free (attached to a workload) is not offered."""
    busy_is_withheld = inventory.source == "dstack"  # NVML's is_free only says a process runs there
    return [_registration_gpu(g) for g in inventory.gpus if not (busy_is_withheld and g.is_free is False)]


def _registration_gpu(gpu: GpuInfo) -> dict[str, Any]:
    return {
        "index": gpu.index,
        "uuid": gpu.uuid or "",
        "name": gpu.name[:128],
        "vram_gb": gpu.vram_gb if gpu.vram_gb is not None else 0.0,
        "compute_capability": gpu.compute_capability or "",
    }


def heartbeat_gpus(telemetry: Iterable[GpuTelemetry]) -> list[dict[str, Any]]:
    """``gpus`` of a heartbeat: utilisation %, memory in MiB, °C and W, None where unknown."""
    return [
        {
            "index": t.index,
            "util_pct": t.util_gpu_pct,
            "mem_used_mb": t.memory_used_mib,
            "mem_total_mb": t.memory_total_mib,
            "temp_c": t.temperature_c,
            "power_w": t.power_draw_w,
        }
        for t in telemetry
    ]


def mem_free_gb(telemetry: Iterable[GpuTelemetry]) -> float | None:
    """Free GPU memory over all GPUs in GB, the heartbeat's ``mem_free_gb``; None with no reading."""
    free = [t.memory_free_mib for t in telemetry if t.memory_free_mib is not None]
    return round(sum(free) * MIB / GB, 2) if free else None


def health_metadata(inventory: Inventory) -> dict[str, Any]:
    """``/health`` metadata: DStack's ``{gpu_count, gpus:[{slot, product_id, description, is_free}],
    allow_attach_all}``, each GPU also carrying its registration fields."""
    return {
        "gpu_count": len(inventory.gpus),
        "gpus": [
            {
                "slot": g.pci_bus_id,
                "product_id": g.product_id,
                "description": g.name,
                "is_free": g.is_free,
                **_registration_gpu(g),
            }
            for g in inventory.gpus
        ],
        "allow_attach_all": inventory.allow_attach_all,
    }


# -- units ------------------------------------------------------------------------------------------------


def to_mib(num_bytes: int) -> int:
    """Bytes to MiB, rounded to the nearest as nvidia-smi prints them."""
    return round(int(num_bytes) / MIB)


def to_watts(milliwatts: int | None) -> float | None:
    """NVML's milliwatts to watts."""
    return None if milliwatts is None else int(milliwatts) / 1000


def _mib_or_none(num_bytes: int | None) -> int | None:
    return None if num_bytes is None else to_mib(num_bytes)


def _product_id(pci_device_id: int) -> str:
    """NVML packs device and vendor ids as 0xDDDDVVVV; lspci and DStack print "vvvv:dddd"."""
    return f"{pci_device_id & 0xFFFF:04x}:{pci_device_id >> 16:04x}"


def _text(value: str | bytes) -> str:
    """pynvml returns str for most strings but bytes for ctypes char arrays (PCI bus id)."""
    return value.decode("utf-8", "replace").rstrip("\x00") if isinstance(value, bytes) else str(value)
