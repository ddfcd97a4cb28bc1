"""GPU inventory and telemetry, checked against real H100 readings.

The replayed NVML answers come from ``nvml.json``; every figure that reaches the hub is compared with
that file and, independently, with ``nvidia-smi --query-gpu`` (CSV) and ``nvidia-smi -q -x`` (XML),
read here with nothing from gpupool. The three were taken seconds apart, so static figures must agree
exactly and moving ones (temperature, power, utilisation) within the bounds noted at each check.
"""

from __future__ import annotations

import csv
import ctypes.util
import dataclasses
import json
import shutil
import socket
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import uvicorn
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gpupool.api.schemas_registry import GpuSpecIn, HeartbeatIn
from gpupool.errors import InvalidInput, Unavailable
from gpupool.node.dstack import fetch_dstack_inventory
from gpupool.node.gpu import (
    MIB,
    GpuProcess,
    Inventory,
    health_metadata,
    heartbeat_gpus,
    mem_free_gb,
    open_nvml,
    process_usage,
    read_inventory,
    read_telemetry,
    registration_gpus,
    to_mib,
    to_watts,
)
from gpupool.node.nvml_replay import ReplayNvml

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gpu"
SCENARIOS = ["h100-idle", "h100-loaded"]


# -- the fixture files, read without gpupool ---------------------------------------------------------------


def smi_csv(scenario: str) -> dict[str, str]:
    with (FIXTURES / scenario / "query-gpu.csv").open(newline="") as f:
        rows = list(csv.reader(f, skipinitialspace=True))
    assert len(rows) == 2, "one GPU per fixture"
    return dict(zip(rows[0], rows[1], strict=True))


def smi_xml(scenario: str) -> ET.Element:
    return ET.parse(FIXTURES / scenario / "nvidia-smi-q.xml").getroot()


def xml_text(root: ET.Element, path: str) -> str:
    node = root.find(path)
    assert node is not None and node.text is not None, path
    return node.text.strip()


def number(text: str) -> float:
    """'81559 MiB' → 81559.0, '700.00 W' → 700.0, '99 %' → 99.0."""
    return float(text.split()[0])


def recorded(scenario: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / scenario / "nvml.json").read_text())
    return data


def copy_fixture(tmp_path: Path, scenario: str, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of a real recording with one change, for cases the real GPU did not show."""
    target = tmp_path / scenario
    shutil.copytree(FIXTURES / scenario, target)
    data = recorded(scenario)
    edit(data)
    (target / "nvml.json").write_text(json.dumps(data))
    return target


# -- what reaches the hub ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_registration_gpus_are_what_nvidia_smi_reports(scenario: str) -> None:
    row = smi_csv(scenario)
    gpu = smi_xml(scenario).find("gpu")
    assert gpu is not None
    total_mib = number(row["memory.total [MiB]"])
    assert total_mib == number(xml_text(gpu, "fb_memory_usage/total"))

    body = registration_gpus(read_inventory(ReplayNvml(FIXTURES / scenario)))

    assert body == [
        {
            "index": int(row["index"]),
            "uuid": row["uuid"],
            "name": row["name"],
            "vram_gb": round(total_mib * 2**20 / 1e9, 2),  # 85.52 decimal GB
            "compute_capability": row["compute_cap"],
        }
    ]
    assert body[0]["uuid"] == xml_text(gpu, "uuid") and body[0]["name"] == xml_text(gpu, "product_name")
    GpuSpecIn(**body[0])  # the hub's registration schema takes it as is


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_inventory_static_figures_agree_with_csv_and_xml(scenario: str) -> None:
    row, root = smi_csv(scenario), smi_xml(scenario)
    gpu_xml = root.find("gpu")
    assert gpu_xml is not None

    inv = read_inventory(ReplayNvml(FIXTURES / scenario))

    assert (
        inv.kind == "gpu" and inv.source == "nvml" and len(inv.gpus) == int(xml_text(root, "attached_gpus"))
    )
    gpu = inv.gpus[0]
    assert inv.driver_version == row["driver_version"] == xml_text(root, "driver_version")
    assert inv.cuda_version == xml_text(root, "cuda_version")
    assert gpu.pci_bus_id == row["pci.bus_id"] == xml_text(gpu_xml, "pci/pci_bus_id")
    assert gpu.mig_enabled is (row["mig.mode.current"] != "Disabled")
    assert gpu.mig_enabled is (xml_text(gpu_xml, "mig_mode/current_mig") != "Disabled")
    assert gpu.memory_total_mib == number(row["memory.total [MiB]"])
    assert (
        gpu.max_clock_sm_mhz
        == number(row["clocks.max.sm [MHz]"])
        == number(xml_text(gpu_xml, "max_clocks/sm_clock"))
    )
    assert gpu.max_clock_mem_mhz == number(xml_text(gpu_xml, "max_clocks/mem_clock"))
    device_vendor = xml_text(gpu_xml, "pci/pci_device_id")  # "233010DE": device 2330, vendor 10DE
    assert gpu.product_id == f"{device_vendor[4:]}:{device_vendor[:4]}".lower() == "10de:2330"
    assert gpu.telemetry is not None
    assert gpu.telemetry.power_limit_w == number(row["power.limit [W]"])
    assert gpu.telemetry.power_limit_w == number(xml_text(gpu_xml, "gpu_power_readings/current_power_limit"))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_heartbeat_figures_are_the_recorded_nvml_readings_in_hub_units(scenario: str) -> None:
    dev = recorded(scenario)["devices"][0]
    memory = dev["nvmlDeviceGetMemoryInfo"]

    body = heartbeat_gpus(read_telemetry(ReplayNvml(FIXTURES / scenario)))

    assert body == [
        {
            "index": 0,
            "util_pct": dev["nvmlDeviceGetUtilizationRates"]["gpu"],
            "mem_used_mb": round(memory["used"] / 1048576),
            "mem_total_mb": round(memory["total"] / 1048576),
            "temp_c": dev["temperature_gpu"],
            "power_w": dev["nvmlDeviceGetPowerUsage"] / 1000,  # NVML reports milliwatts
        }
    ]
    HeartbeatIn(gpus=body)  # the hub's heartbeat schema takes it as is


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_heartbeat_figures_agree_with_nvidia_smi_taken_seconds_apart(scenario: str) -> None:
    row = smi_csv(scenario)
    gpu_xml = smi_xml(scenario).find("gpu")
    assert gpu_xml is not None
    [tel] = read_telemetry(ReplayNvml(FIXTURES / scenario))
    [beat] = heartbeat_gpus([tel])

    assert beat["mem_total_mb"] == number(row["memory.total [MiB]"])
    # NVML's v1 "used" includes the driver's reservation, which nvidia-smi lists apart.
    smi_used = number(xml_text(gpu_xml, "fb_memory_usage/used")) + number(
        xml_text(gpu_xml, "fb_memory_usage/reserved")
    )
    assert abs(beat["mem_used_mb"] - smi_used) <= 1
    assert tel.memory_free_mib is not None
    assert abs(tel.memory_free_mib - number(row["memory.free [MiB]"])) <= 2
    for smi_util in (number(row["utilization.gpu [%]"]), number(xml_text(gpu_xml, "utilization/gpu_util"))):
        assert abs(beat["util_pct"] - smi_util) <= 5
    for smi_temp in (number(row["temperature.gpu"]), number(xml_text(gpu_xml, "temperature/gpu_temp"))):
        assert abs(beat["temp_c"] - smi_temp) <= 3
    limit_w = number(row["power.limit [W]"])
    assert 0.05 * limit_w < beat["power_w"] <= limit_w  # watts, not milliwatts
    if scenario == "h100-loaded":  # under a steady load the two readings are within 2 %
        assert beat["power_w"] == pytest.approx(number(row["power.draw [W]"]), rel=0.02)
        assert tel.util_memory_pct == number(row["utilization.memory [%]"])


def test_loaded_gpu_lists_the_process_nvidia_smi_saw_and_is_not_free() -> None:
    gpu_xml = smi_xml("h100-loaded").find("gpu")
    assert gpu_xml is not None
    pid = int(xml_text(gpu_xml, "processes/process_info/pid"))
    used = int(number(xml_text(gpu_xml, "processes/process_info/used_memory")))

    inv = read_inventory(ReplayNvml(FIXTURES / "h100-loaded"))

    assert inv.gpus[0].telemetry is not None
    assert inv.gpus[0].telemetry.processes == (GpuProcess(pid=pid, used_memory_mib=used),)
    assert inv.gpus[0].is_free is False
    assert health_metadata(inv)["gpus"][0]["is_free"] is False


def test_idle_gpu_has_no_process_and_is_free() -> None:
    gpu_xml = smi_xml("h100-idle").find("gpu")
    assert gpu_xml is not None and gpu_xml.find("processes/process_info") is None

    inv = read_inventory(ReplayNvml(FIXTURES / "h100-idle"))

    assert inv.gpus[0].telemetry is not None and inv.gpus[0].telemetry.processes == ()
    assert inv.gpus[0].is_free is True


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_clocks_are_the_recorded_ones_and_an_unrecorded_clock_is_none(scenario: str) -> None:
    dev = recorded(scenario)["devices"][0]
    gpu_xml = smi_xml(scenario).find("gpu")
    assert gpu_xml is not None

    [tel] = read_telemetry(ReplayNvml(FIXTURES / scenario))

    assert tel.clock_sm_mhz == dev["clock_sm"]
    assert tel.clock_mem_mhz == dev["clock_mem"] == number(xml_text(gpu_xml, "clocks/mem_clock"))
    assert tel.clock_graphics_mhz is None  # not in nvml.json: the replay does not invent it


def test_loaded_sm_clock_matches_nvidia_smi_under_the_power_cap() -> None:
    gpu_xml = smi_xml("h100-loaded").find("gpu")
    assert gpu_xml is not None
    [tel] = read_telemetry(ReplayNvml(FIXTURES / "h100-loaded"))
    assert tel.clock_sm_mhz == number(xml_text(gpu_xml, "clocks/sm_clock"))


def test_health_metadata_has_the_dstack_shape() -> None:
    inv = read_inventory(ReplayNvml(FIXTURES / "h100-idle"))
    meta = health_metadata(inv)
    assert meta["gpu_count"] == 1 and meta["allow_attach_all"] is True
    gpu = meta["gpus"][0]
    assert {k: gpu[k] for k in ("slot", "product_id", "description", "is_free")} == {
        "slot": "00000000:00:06.0",
        "product_id": "10de:2330",
        "description": "NVIDIA H100 80GB HBM3",
        "is_free": True,
    }
    json.dumps(meta)  # goes into /health as a JSON string


# -- units -------------------------------------------------------------------------------------------------


def test_unit_conversions_on_the_recorded_figures() -> None:
    assert to_mib(85520809984) == 81559  # H100 total, exactly 81559 MiB
    assert to_mib(1798111232) == 1715  # 1714.8 MiB rounds like nvidia-smi
    assert to_mib(1285554176) == 1226
    assert to_watts(695312) == 695.312
    assert to_watts(700000) == 700.0
    assert to_watts(None) is None
    [tel] = read_telemetry(ReplayNvml(FIXTURES / "h100-loaded"))
    assert mem_free_gb([tel]) == round(79844 * MIB / 1e9, 2) == 83.72
    assert mem_free_gb([]) is None


@given(st.integers(min_value=0, max_value=2**40))
def test_whole_mebibytes_convert_exactly(n: int) -> None:
    assert to_mib(n * MIB) == n


@given(st.integers(min_value=0, max_value=10**7))
def test_milliwatts_to_watts_is_a_thousandth(mw: int) -> None:
    watts = to_watts(mw)
    assert watts is not None and round(watts * 1000) == mw


# -- refusals and absences ---------------------------------------------------------------------------------


def test_a_field_the_driver_does_not_support_is_none_not_a_crash(tmp_path: Path) -> None:
    def refuse(data: dict[str, Any]) -> None:
        dev = data["devices"][0]
        dev["nvmlDeviceGetPowerUsage"] = {"error": "Not Supported"}
        dev["nvmlDeviceGetMigMode"] = {"error": "Not Supported"}
        dev["nvmlDeviceGetComputeRunningProcesses"] = {"error": "Insufficient Permissions"}

    inv = read_inventory(ReplayNvml(copy_fixture(tmp_path, "h100-loaded", refuse)))

    gpu = inv.gpus[0]
    assert gpu.telemetry is not None
    assert gpu.telemetry.power_draw_w is None and gpu.mig_enabled is None and gpu.is_free is None
    assert gpu.telemetry.power_limit_w == 700.0 and gpu.telemetry.util_gpu_pct == 99  # the rest still read
    [beat] = heartbeat_gpus([gpu.telemetry])
    assert beat["power_w"] is None
    HeartbeatIn(gpus=[beat])


def test_a_gpu_whose_identity_cannot_be_read_is_left_out_and_named(tmp_path: Path) -> None:
    def two_gpus_second_lost(data: dict[str, Any]) -> None:
        second = json.loads(json.dumps(data["devices"][0]))
        second["index"] = 1
        second["nvmlDeviceGetUUID"] = {"error": "GPU is lost"}
        data["devices"].append(second)
        data["device_count"] = 2

    inv = read_inventory(ReplayNvml(copy_fixture(tmp_path, "h100-idle", two_gpus_second_lost)))

    assert [g.index for g in inv.gpus] == [0]
    assert inv.detail is not None and "GPU 1" in inv.detail and "GPU is lost" in inv.detail


def test_gpus_present_but_none_readable_is_unavailable_not_a_cpu_node(tmp_path: Path) -> None:
    def lose(data: dict[str, Any]) -> None:
        data["devices"][0]["nvmlDeviceGetMemoryInfo"] = {"error": "GPU is lost"}

    replay = ReplayNvml(copy_fixture(tmp_path, "h100-idle", lose))
    with pytest.raises(Unavailable, match="GPU is lost"):
        read_inventory(replay)
    assert replay.init_calls == replay.shutdown_calls == 1


def test_zero_nvidia_gpus_is_a_cpu_node(tmp_path: Path) -> None:
    def none(data: dict[str, Any]) -> None:
        data["devices"], data["device_count"] = [], 0

    replay = ReplayNvml(copy_fixture(tmp_path, "h100-idle", none))
    inv = read_inventory(replay)

    assert inv.kind == "cpu" and inv.gpus == () and inv.detail is not None and "no NVIDIA GPU" in inv.detail
    assert registration_gpus(inv) == [] and read_telemetry(replay) == []
    assert replay.init_calls == replay.shutdown_calls == 2


class _InitFails(ReplayNvml):
    error: type[Exception] = ReplayNvml.NVMLError

    def nvmlInit(self) -> None:
        raise self.error("init refused")


@pytest.mark.parametrize(
    "error", [ReplayNvml.NVMLError_LibraryNotFound, ReplayNvml.NVMLError_DriverNotLoaded]
)
def test_no_nvml_library_or_driver_is_an_honest_cpu_node(error: type[Exception]) -> None:
    replay = _InitFails(FIXTURES / "h100-idle")
    replay.error = error

    inv = read_inventory(replay)

    assert_cpu_node_of_this_host(inv)
    assert read_telemetry(replay) == [] and process_usage(replay, [462]) == {}
    assert replay.shutdown_calls == 0  # nothing to shut down after a failed init


def test_nvml_failing_otherwise_is_unavailable_not_a_cpu_node() -> None:
    replay = _InitFails(FIXTURES / "h100-idle")
    replay.error = ReplayNvml.NVMLError_NoPermission
    with pytest.raises(Unavailable, match="nvmlInit failed"):
        read_inventory(replay)


def test_without_the_pynvml_package_the_node_is_a_cpu_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    inv = read_inventory()
    assert_cpu_node_of_this_host(inv)
    assert inv.detail is not None and "not installed" in inv.detail
    assert read_telemetry() == [] and process_usage(None, [1]) == {} and open_nvml() is None


def assert_cpu_node_of_this_host(inv: Inventory) -> None:
    assert inv.kind == "cpu" and inv.gpus == () and inv.source == "none"
    assert inv.cpu_threads == psutil.cpu_count(logical=True)
    assert inv.cpu_cores == (psutil.cpu_count(logical=False) or psutil.cpu_count(logical=True))
    assert inv.ram_gb == round(psutil.virtual_memory().total / 1e9, 2)
    assert registration_gpus(inv) == [] and health_metadata(inv)["gpu_count"] == 0


def test_this_machine_is_read_through_the_real_pynvml() -> None:
    import pynvml  # nvidia-ml-py is installed

    assert callable(pynvml.nvmlInit)
    inv = read_inventory()
    if ctypes.util.find_library("nvidia-ml") is None and not Path("/dev/nvidiactl").exists():
        assert_cpu_node_of_this_host(inv)  # no driver here: a CPU node, no invented GPU
    else:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True).stdout
        assert inv.kind == "gpu" and len(inv.gpus) == len(listed.strip().splitlines())


def test_inventory_kind_must_match_its_gpus() -> None:
    gpu = read_inventory(ReplayNvml(FIXTURES / "h100-idle")).gpus[0]
    with pytest.raises(ValueError):
        Inventory(kind="cpu", source="nvml", cpu_cores=1, cpu_threads=1, ram_gb=1.0, gpus=(gpu,))
    with pytest.raises(ValueError):
        Inventory(kind="gpu", source="nvml", cpu_cores=1, cpu_threads=1, ram_gb=1.0)


# -- NVML sessions and the replay itself -------------------------------------------------------------------


class _CountFails(ReplayNvml):
    def nvmlDeviceGetCount(self) -> int:
        raise self.NVMLError_Unknown("Unknown Error")


def test_every_read_shuts_nvml_down_even_when_it_fails() -> None:
    replay = ReplayNvml(FIXTURES / "h100-loaded")
    read_inventory(replay)
    read_telemetry(replay)
    process_usage(replay, [462])
    assert replay.init_calls == replay.shutdown_calls == 3 and not replay.initialised

    failing = _CountFails(FIXTURES / "h100-loaded")
    with pytest.raises(Unavailable, match="nvmlDeviceGetCount"):
        read_inventory(failing)
    assert failing.init_calls == failing.shutdown_calls == 1


def test_replay_behaves_like_nvml_units_and_types() -> None:
    replay = ReplayNvml(FIXTURES / "h100-loaded")
    with pytest.raises(ReplayNvml.NVMLError_Uninitialized):
        replay.nvmlDeviceGetCount()
    replay.nvmlInit()
    try:
        handle = replay.nvmlDeviceGetHandleByIndex(0)
        assert replay.nvmlDeviceGetPowerUsage(handle) == 695312  # milliwatts
        assert replay.nvmlDeviceGetMemoryInfo(handle).total == 85520809984  # bytes
        assert replay.nvmlDeviceGetPciInfo(handle).busId == b"00000000:00:06.0"  # bytes, like ctypes
        assert replay.nvmlSystemGetCudaDriverVersion() == 13000
        with pytest.raises(ReplayNvml.NVMLError_InvalidArgument):
            replay.nvmlDeviceGetHandleByIndex(1)
        with pytest.raises(ReplayNvml.NVMLError_NotSupported, match="not recorded"):
            replay.nvmlDeviceGetClockInfo(handle, replay.NVML_CLOCK_GRAPHICS)
    finally:
        replay.nvmlShutdown()
    with pytest.raises(ReplayNvml.NVMLError_Uninitialized):
        replay.nvmlShutdown()


def test_replay_refuses_a_broken_recording(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no NVML recording"):
        ReplayNvml(tmp_path)
    (tmp_path / "nvml.json").write_text('{"device_count": 2, "devices": [{"index": 0}]}')
    with pytest.raises(InvalidInput, match="device_count is 2"):
        ReplayNvml(tmp_path)


def test_open_nvml_with_a_fixture_dir_replays_it() -> None:
    nvml = open_nvml(FIXTURES / "h100-idle")
    assert isinstance(nvml, ReplayNvml)
    assert read_inventory(nvml).gpus[0].name == "NVIDIA H100 80GB HBM3"


# -- per-task usage ----------------------------------------------------------------------------------------


def test_process_usage_reports_the_task_process_on_the_loaded_gpu() -> None:
    replay = ReplayNvml(FIXTURES / "h100-loaded")
    dev = recorded("h100-loaded")["devices"][0]
    [proc] = dev["nvmlDeviceGetComputeRunningProcesses"]

    usage = process_usage(replay, [proc["pid"], 999_999])

    # No per-process samples were recorded: the device's utilisation is attributed to its process.
    assert usage == {proc["pid"]: (float(dev["nvmlDeviceGetUtilizationRates"]["gpu"]), 1226)}
    assert process_usage(replay, []) == {}
    assert process_usage(ReplayNvml(FIXTURES / "h100-idle"), [proc["pid"]]) == {}


class _Sample:
    def __init__(self, pid: int, sm: int) -> None:
        self.pid, self.smUtil, self.memUtil, self.timeStamp = pid, sm, 0, 0


class _WithSamples(ReplayNvml):
    def nvmlDeviceGetProcessUtilization(self, handle: object, timestamp: int) -> list[Any]:
        return [_Sample(462, 80), _Sample(462, 90), _Sample(7, 100)]


def test_process_usage_prefers_per_process_samples_when_the_driver_keeps_them() -> None:
    assert process_usage(_WithSamples(FIXTURES / "h100-loaded"), [462]) == {462: (85.0, 1226)}


# -- DStack GPU service (a real HTTP server) ---------------------------------------------------------------


class FakeDStack:
    """A DStack service on a real socket; ``answer`` is what ``/prpc/ListGpus`` returns next."""

    def __init__(self) -> None:
        self.answer: Response = JSONResponse({"gpus": [], "allow_attach_all": False})
        self.queries: list[str] = []

        async def list_gpus(request: Request) -> Response:
            self.queries.append(request.url.query)
            return self.answer

        self.app = Starlette(routes=[Route("/prpc/ListGpus", list_gpus, methods=["GET"])])


def serve(app: Starlette, **where: Any) -> Iterator[uvicorn.Server]:
    config = uvicorn.Config(app, log_level="warning", lifespan="off", ws="none", http="h11", **where)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the test server failed to start"
        thread.join(0.01)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def dstack() -> Iterator[tuple[FakeDStack, str]]:
    fake, port = FakeDStack(), free_port()
    for _ in serve(fake.app, host="127.0.0.1", port=port):
        yield fake, f"http://127.0.0.1:{port}"


H100_LISTING = {
    "gpus": [
        {
            "slot": "0000:00:06.0",
            "product_id": "10de:2330",
            "description": "3D controller: NVIDIA Corporation GH100 [H100 SXM5 80GB] (rev a1)",
            "is_free": True,
        },
        {
            "slot": "0000:3b:00.0",
            "product_id": "10de:2335",
            "description": "3D controller: NVIDIA Corporation H200 [10de:2335]",
            "is_free": False,
        },
    ],
    "allow_attach_all": True,
}


def test_dstack_inventory_is_read_from_list_gpus(dstack: tuple[FakeDStack, str]) -> None:
    fake, url = dstack
    fake.answer = JSONResponse(H100_LISTING)

    inv = fetch_dstack_inventory(url + "/")

    assert fake.queries == ["json"]  # GET {url}/prpc/ListGpus?json, as the seed's backend asks
    assert inv.kind == "gpu" and inv.source == "dstack" and inv.allow_attach_all is True
    assert [(g.pci_bus_id, g.product_id, g.is_free) for g in inv.gpus] == [
        ("0000:00:06.0", "10de:2330", True),
        ("0000:3b:00.0", "10de:2335", False),
    ]
    # Only the nominal size printed in a description is used; an unknown size is sent as 0, never guessed.
    # A GPU DStack reports as not free is not offered at all (SPEC §8.4).
    assert [g["vram_gb"] for g in registration_gpus(inv)] == [80.0]
    freed = dataclasses.replace(inv, gpus=tuple(dataclasses.replace(g, is_free=True) for g in inv.gpus))
    assert [g["vram_gb"] for g in registration_gpus(freed)] == [80.0, 0.0]
    assert all(g["uuid"] == "" and g["compute_capability"] == "" for g in registration_gpus(inv))
    meta = health_metadata(inv)
    assert meta["gpu_count"] == 2 and meta["gpus"][1]["description"].endswith("[10de:2335]")


def test_dstack_without_gpus_is_a_cpu_node(dstack: tuple[FakeDStack, str]) -> None:
    inv = fetch_dstack_inventory(dstack[1])
    assert inv.kind == "cpu" and inv.gpus == () and inv.source == "dstack"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (PlainTextResponse("<html>gateway</html>"), "answered garbage"),
        (
            JSONResponse(
                {
                    "gpus": [{"slot": "x", "product_id": "y", "description": "z", "is_free": "yes"}],
                    "allow_attach_all": True,
                }
            ),
            "answered garbage: gpus.0.is_free",
        ),
        (JSONResponse({"gpus": []}), "answered garbage: allow_attach_all"),
        (JSONResponse({"code": 500, "message": "boom"}, status_code=500), "answered HTTP 500"),
    ],
)
def test_dstack_answering_garbage_is_unavailable_naming_the_url(
    dstack: tuple[FakeDStack, str], answer: Response, expected: str
) -> None:
    fake, url = dstack
    fake.answer = answer
    with pytest.raises(Unavailable, match=expected) as caught:
        fetch_dstack_inventory(url)
    assert url in caught.value.message


def test_unreachable_dstack_is_unavailable_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(Unavailable, match="cannot be reached") as caught:
        fetch_dstack_inventory(url, timeout_s=2.0)
    assert url in caught.value.message


def test_dstack_over_a_unix_socket(tmp_path: Path) -> None:
    fake = FakeDStack()
    fake.answer = JSONResponse(H100_LISTING)
    sock = tmp_path / "dstack.sock"
    for _ in serve(fake.app, uds=str(sock)):
        inv = fetch_dstack_inventory(f"unix://{sock}")
    assert len(inv.gpus) == 2 and fake.queries == ["json"]
    with pytest.raises(Unavailable, match=str(tmp_path / "missing.sock")):
        fetch_dstack_inventory(f"unix://{tmp_path / 'missing.sock'}")


def test_dstack_url_with_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(InvalidInput, match="DSTACK_BACKEND_DSTACK_URL"):
        fetch_dstack_inventory("localhost:14520")
