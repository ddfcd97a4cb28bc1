"""A stand-in for the ``pynvml`` module that replays readings recorded on a real GPU.

``ReplayNvml(fixture_dir)`` reads ``<fixture_dir>/nvml.json`` (the format of
``tests/fixtures/gpu/*/nvml.json``: what each named NVML call returned, device by device) and answers
the same calls ``pynvml`` answers, with the same units (bytes, milliwatts, MHz, °C) and the same
shapes (structs with ``.total``/``.free``/``.used``, ``busId`` as bytes like the ctypes struct, lists for
MIG mode). A call the driver refused (``{"error": "Not Supported"}``) raises the matching
``NVMLError_*``; a call that was never recorded raises ``NVMLError_NotSupported`` saying so, because a
replay must not invent a figure. It lets the node agent run end to end on machines without a GPU
(``GPUPOOL_NODE_FAKE_NVML=<fixture dir>``) while ``gpu.py`` runs the very code it runs on pynvml.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpupool.errors import InvalidInput

# Same numeric values as pynvml, so code that mixes the two cannot be surprised.
NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_GRAPHICS = 0
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_DEVICE_MIG_DISABLE = 0
NVML_DEVICE_MIG_ENABLE = 1


class NVMLError(Exception):
    """Raised like pynvml's NVMLError: ``value`` is the NVML return code."""

    value = 999  # NVML_ERROR_UNKNOWN


class NVMLError_Uninitialized(NVMLError):
    value = 1


class NVMLError_InvalidArgument(NVMLError):
    value = 2


class NVMLError_NotSupported(NVMLError):
    value = 3


class NVMLError_NoPermission(NVMLError):
    value = 4


class NVMLError_NotFound(NVMLError):
    value = 6


class NVMLError_DriverNotLoaded(NVMLError):
    value = 9


class NVMLError_Timeout(NVMLError):
    value = 10


class NVMLError_LibraryNotFound(NVMLError):
    value = 12


class NVMLError_FunctionNotFound(NVMLError):
    value = 13


class NVMLError_GpuIsLost(NVMLError):
    value = 15


class NVMLError_Unknown(NVMLError):
    value = 999


# str(pynvml.NVMLError) → class, so a recorded refusal replays as the same exception type.
_ERRORS_BY_TEXT: dict[str, type[NVMLError]] = {
    "Uninitialized": NVMLError_Uninitialized,
    "Invalid Argument": NVMLError_InvalidArgument,
    "Not Supported": NVMLError_NotSupported,
    "Insufficient Permissions": NVMLError_NoPermission,
    "Not Found": NVMLError_NotFound,
    "Driver Not Loaded": NVMLError_DriverNotLoaded,
    "Timeout": NVMLError_Timeout,
    "NVML Shared Library Not Found": NVMLError_LibraryNotFound,
    "Function Not Found": NVMLError_FunctionNotFound,
    "GPU is lost": NVMLError_GpuIsLost,
    "Unknown Error": NVMLError_Unknown,
}


@dataclass(frozen=True, slots=True)
class Memory:
    """``nvmlDeviceGetMemoryInfo`` (v1): bytes."""

    total: int
    free: int
    used: int


@dataclass(frozen=True, slots=True)
class Utilization:
    """``nvmlDeviceGetUtilizationRates``: percent over the driver's last sample period."""

    gpu: int
    memory: int


@dataclass(frozen=True, slots=True)
class PciInfo:
    """``nvmlDeviceGetPciInfo``; bus ids are bytes, as ctypes ``c_char`` arrays are in pynvml."""

    busId: bytes
    busIdLegacy: bytes
    domain: int
    bus: int
    device: int
    pciDeviceId: int
    pciSubSystemId: int


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """One entry of ``nvmlDeviceGetComputeRunningProcesses``; memory in bytes, None if unknown."""

    pid: int
    usedGpuMemory: int | None
    gpuInstanceId: int
    computeInstanceId: int


@dataclass(frozen=True, slots=True)
class _Handle:
    index: int


class ReplayNvml:
    """Answers pynvml's calls from one recorded ``nvml.json``; see the module docstring."""

    NVMLError = NVMLError
    NVMLError_Uninitialized = NVMLError_Uninitialized
    NVMLError_InvalidArgument = NVMLError_InvalidArgument
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_NoPermission = NVMLError_NoPermission
    NVMLError_NotFound = NVMLError_NotFound
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    NVMLError_Timeout = NVMLError_Timeout
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_FunctionNotFound = NVMLError_FunctionNotFound
    NVMLError_GpuIsLost = NVMLError_GpuIsLost
    NVMLError_Unknown = NVMLError_Unknown
    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU
    NVML_CLOCK_GRAPHICS = NVML_CLOCK_GRAPHICS
    NVML_CLOCK_SM = NVML_CLOCK_SM
    NVML_CLOCK_MEM = NVML_CLOCK_MEM
    NVML_DEVICE_MIG_DISABLE = NVML_DEVICE_MIG_DISABLE
    NVML_DEVICE_MIG_ENABLE = NVML_DEVICE_MIG_ENABLE

    def __init__(self, fixture_dir: str | Path) -> None:
        self.path = Path(fixture_dir) / "nvml.json"
        data = _load(self.path)
        self._system: dict[str, Any] = data
        self._devices: list[dict[str, Any]] = data["devices"]
        self._lock = threading.Lock()
        self._depth = 0
        self.init_calls = 0
        self.shutdown_calls = 0

    def __repr__(self) -> str:
        return f"ReplayNvml({str(self.path.parent)!r})"

    # -- library lifetime: like NVML, every other call needs an open nvmlInit ----------------------------

    @property
    def initialised(self) -> bool:
        return self._depth > 0

    def nvmlInit(self) -> None:
        with self._lock:
            self._depth += 1
            self.init_calls += 1

    def nvmlShutdown(self) -> None:
        with self._lock:
            if self._depth == 0:
                raise NVMLError_Uninitialized("nvmlShutdown without nvmlInit")
            self._depth -= 1
            self.shutdown_calls += 1

    # -- system ------------------------------------------------------------------------------------------

    def nvmlSystemGetDriverVersion(self) -> str:
        return str(self._system_value("driver_version"))

    def nvmlSystemGetNVMLVersion(self) -> str:
        return str(self._system_value("nvml_version"))

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return int(self._system_value("cuda_driver_version"))

    def nvmlDeviceGetCount(self) -> int:
        return int(self._system_value("device_count"))

    def nvmlDeviceGetHandleByIndex(self, index: int) -> object:
        self._require_init()
        if not any(d["index"] == index for d in self._devices):
            raise NVMLError_InvalidArgument(f"no device with index {index} in {self.path}")
        return _Handle(index)

    # -- devices -----------------------------------------------------------------------------------------

    def nvmlDeviceGetName(self, handle: object) -> str:
        return str(self._recorded(handle, "nvmlDeviceGetName"))

    def nvmlDeviceGetUUID(self, handle: object) -> str:
        return str(self._recorded(handle, "nvmlDeviceGetUUID"))

    def nvmlDeviceGetSerial(self, handle: object) -> str:
        return str(self._recorded(handle, "nvmlDeviceGetSerial"))

    def nvmlDeviceGetMemoryInfo(self, handle: object, version: int | None = None) -> Memory:
        if version:
            raise NVMLError_NotSupported(f"only nvmlDeviceGetMemoryInfo v1 was recorded in {self.path}")
        raw = self._recorded(handle, "nvmlDeviceGetMemoryInfo")
        return Memory(total=int(raw["total"]), free=int(raw["free"]), used=int(raw["used"]))

    def nvmlDeviceGetUtilizationRates(self, handle: object) -> Utilization:
        raw = self._recorded(handle, "nvmlDeviceGetUtilizationRates")
        return Utilization(gpu=int(raw["gpu"]), memory=int(raw["memory"]))

    def nvmlDeviceGetTemperature(self, handle: object, sensor: int) -> int:
        if sensor != NVML_TEMPERATURE_GPU:
            raise NVMLError_NotSupported(f"only the GPU temperature sensor was recorded in {self.path}")
        return int(self._recorded(handle, "temperature_gpu"))

    def nvmlDeviceGetPowerUsage(self, handle: object) -> int:
        """Milliwatts, as NVML reports them."""
        return int(self._recorded(handle, "nvmlDeviceGetPowerUsage"))

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: object) -> int:
        """Milliwatts."""
        return int(self._recorded(handle, "nvmlDeviceGetEnforcedPowerLimit"))

    def nvmlDeviceGetPowerManagementLimit(self, handle: object) -> int:
        """Milliwatts."""
        return int(self._recorded(handle, "nvmlDeviceGetPowerManagementLimit"))

    def nvmlDeviceGetClockInfo(self, handle: object, clock_type: int) -> int:
        key = {NVML_CLOCK_SM: "clock_sm", NVML_CLOCK_MEM: "clock_mem"}.get(clock_type)
        return int(self._recorded(handle, key or f"clock_{clock_type}"))

    def nvmlDeviceGetMaxClockInfo(self, handle: object, clock_type: int) -> int:
        key = {NVML_CLOCK_SM: "max_clock_sm", NVML_CLOCK_MEM: "max_clock_mem"}.get(clock_type)
        return int(self._recorded(handle, key or f"max_clock_{clock_type}"))

    def nvmlDeviceGetCudaComputeCapability(self, handle: object) -> tuple[int, int]:
        major, minor = self._recorded(handle, "nvmlDeviceGetCudaComputeCapability")
        return int(major), int(minor)

    def nvmlDeviceGetMigMode(self, handle: object) -> list[int]:
        """[current, pending], as pynvml returns them."""
        current, pending = self._recorded(handle, "nvmlDeviceGetMigMode")
        return [int(current), int(pending)]

    def nvmlDeviceGetPciInfo(self, handle: object) -> PciInfo:
        raw = self._recorded(handle, "nvmlDeviceGetPciInfo")
        return PciInfo(
            busId=str(raw["busId"]).encode(),
            busIdLegacy=str(raw["busIdLegacy"]).encode(),
            domain=int(raw["domain"]),
            bus=int(raw["bus"]),
            device=int(raw["device"]),
            pciDeviceId=int(raw["pciDeviceId"]),
            pciSubSystemId=int(raw["pciSubSystemId"]),
        )

    def nvmlDeviceGetComputeRunningProcesses(self, handle: object) -> list[ProcessInfo]:
        raw = self._recorded(handle, "nvmlDeviceGetComputeRunningProcesses")
        return [
            ProcessInfo(
                pid=int(p["pid"]),
                usedGpuMemory=None if p.get("usedGpuMemory") is None else int(p["usedGpuMemory"]),
                gpuInstanceId=int(p.get("gpuInstanceId", 0xFFFFFFFF)),
                computeInstanceId=int(p.get("computeInstanceId", 0xFFFFFFFF)),
            )
            for p in raw
        ]

    def nvmlDeviceGetProcessUtilization(self, handle: object, timestamp: int) -> list[Any]:
        """Per-process samples were not recorded; callers fall back as they do on drivers without them."""
        self._device(handle)
        raise NVMLError_NotSupported(f"per-process utilisation samples were not recorded in {self.path}")

    # -- plumbing ----------------------------------------------------------------------------------------

    def _require_init(self) -> None:
        if self._depth == 0:
            raise NVMLError_Uninitialized("call nvmlInit first")

    def _system_value(self, key: str) -> Any:
        self._require_init()
        return _unwrap(self._system.get(key, _NOT_RECORDED), key, self.path)

    def _device(self, handle: object) -> dict[str, Any]:
        self._require_init()
        if not isinstance(handle, _Handle):
            raise NVMLError_InvalidArgument(f"not a device handle: {handle!r}")
        device = next((d for d in self._devices if d["index"] == handle.index), None)
        if device is None:
            raise NVMLError_InvalidArgument(f"no device with index {handle.index} in {self.path}")
        return device

    def _recorded(self, handle: object, key: str) -> Any:
        return _unwrap(self._device(handle).get(key, _NOT_RECORDED), key, self.path)


_NOT_RECORDED = object()


def _unwrap(value: Any, key: str, path: Path) -> Any:
    """The recorded value, or the exception the driver raised (or would have to: not recorded)."""
    if value is _NOT_RECORDED:
        raise NVMLError_NotSupported(f"{key} was not recorded in {path}")
    if isinstance(value, dict) and set(value) == {"error"}:
        text = str(value["error"])
        raise _ERRORS_BY_TEXT.get(text, NVMLError)(text)
    return value


def _load(path: Path) -> dict[str, Any]:
    """Read and sanity-check a recorded ``nvml.json``; a broken fixture is refused, not half-replayed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InvalidInput(f"no NVML recording at {path}", field="fixture_dir") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"unreadable NVML recording {path}: {exc}", field="fixture_dir") from exc
    devices = data.get("devices") if isinstance(data, dict) else None
    if not isinstance(devices, list) or not all(
        isinstance(d, dict) and isinstance(d.get("index"), int) for d in devices
    ):
        raise InvalidInput(f"{path}: 'devices' must be a list of objects with an integer 'index'")
    count = data.get("device_count")
    if isinstance(count, int) and count != len(devices):
        raise InvalidInput(f"{path}: device_count is {count} but {len(devices)} devices are recorded")
    return dict(data)
