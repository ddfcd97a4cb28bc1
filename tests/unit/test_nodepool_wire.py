"""HiveMind's bytes on our ``nodepool`` classes, field by field, both ways.

The table is HiveMind's ``node_pool/nodepool.proto`` (him6794/hivemind at f5428f6) as numbers and wire
types; the bytes are written here by hand, by a writer of a dozen lines, so a field we numbered or typed
differently from HiveMind cannot hide: it would land as an unknown field and read as its default.
"""

from __future__ import annotations

from typing import Any

import pytest

from gpupool.rpc.protos import nodepool_pb2 as pb

Field = tuple[str, int, str]

HIVEMIND: dict[str, tuple[Field, ...]] = {
    "LoginRequest": (("username", 1, "string"), ("password", 2, "string")),
    "LoginResponse": (("success", 1, "bool"), ("message", 2, "string"), ("token", 3, "string")),
    "TransferRequest": (("token", 1, "string"), ("receiver_username", 2, "string"), ("amount", 3, "int64")),
    "TransferResponse": (("success", 1, "bool"), ("message", 2, "string")),
    "GetBalanceRequest": (("username", 1, "string"), ("token", 2, "string")),
    "GetBalanceResponse": (("success", 1, "bool"), ("message", 2, "string"), ("balance", 3, "int64")),
    "RegisterWorkerNodeRequest": (
        ("node_id", 1, "string"),
        ("hostname", 2, "string"),
        ("cpu_cores", 3, "int32"),
        ("memory_gb", 4, "int32"),
        ("cpu_score", 5, "int32"),
        ("gpu_score", 6, "int32"),
        ("gpu_memory_gb", 7, "int32"),
        ("location", 8, "string"),
        ("port", 9, "int32"),
        ("gpu_name", 12, "string"),
        ("docker_status", 13, "string"),
    ),
    "StatusResponse": (("success", 1, "bool"), ("message", 2, "string")),
    "RunningStatusRequest": (
        ("node_id", 1, "string"),
        ("status", 2, "string"),
        ("cpu_usage", 3, "int32"),
        ("memory_usage", 4, "int32"),
        ("gpu_usage", 5, "int32"),
        ("gpu_memory_usage", 6, "int32"),
        ("docker_status", 7, "string"),
        ("running_tasks", 8, "int32"),
    ),
    "RunningStatusResponse": (("success", 1, "bool"), ("message", 2, "string")),
    "UploadTaskRequest": (
        ("task_id", 1, "string"),
        ("task_zip", 2, "bytes"),
        ("memory_gb", 3, "int32"),
        ("cpu_score", 4, "int32"),
        ("gpu_score", 5, "int32"),
        ("gpu_memory_gb", 6, "int32"),
        ("location", 7, "string"),
        ("gpu_name", 8, "string"),
        ("token", 9, "string"),
    ),
    "UploadTaskResponse": (("success", 1, "bool"), ("message", 2, "string")),
    "GetAllUserTasksRequest": (("token", 1, "string"),),
    "TaskInfo": (
        ("task_id", 1, "string"),
        ("status", 2, "string"),
        ("message", 4, "string"),
        ("cpu_usage", 5, "int32"),
        ("memory_usage", 6, "int32"),
        ("gpu_usage", 7, "int32"),
        ("gpu_memory_usage", 8, "int32"),
        ("worker_ip", 9, "string"),
    ),
    "TaskOutputUploadRequest": (("task_id", 1, "string"), ("output", 2, "string"), ("token", 3, "string")),
    "TaskOutputUploadResponse": (("success", 1, "bool"), ("message", 2, "string")),
    "TaskResultUploadRequest": (("task_id", 1, "string"), ("result_zip", 2, "bytes"), ("token", 3, "string")),
    "TaskResultUploadResponse": (("success", 1, "bool"), ("message", 2, "string")),
    "GetTaskResultRequest": (("task_id", 1, "string"), ("token", 2, "string")),
    "GetTaskResultResponse": (("success", 1, "bool"), ("message", 2, "string"), ("result_zip", 3, "bytes")),
    "ExecuteTaskRequest": (
        ("task_id", 1, "string"),
        ("task_zip", 2, "bytes"),
        ("cpu_usage", 3, "int32"),
        ("gpu_usage", 4, "int32"),
        ("memory_gb", 5, "int32"),
        ("gpu_memory_gb", 6, "int32"),
    ),
    "ExecuteTaskResponse": (("success", 1, "bool"), ("message", 2, "string")),
    "TaskOutputRequest": (("task_id", 1, "string"), ("output", 2, "string"), ("token", 3, "string")),
    "TaskOutputResponse": (("success", 1, "bool"), ("message", 2, "string")),
    "StopTaskRequest": (("task_id", 1, "string"), ("token", 2, "string")),
    "StopTaskResponse": (("success", 1, "bool"), ("message", 2, "string")),
    "StopTaskExecutionRequest": (("task_id", 1, "string"),),
    "StopTaskExecutionResponse": (("success", 1, "bool"), ("message", 2, "string")),
    "TaskUsageRequest": (
        ("task_id", 1, "string"),
        ("cpu_usage", 2, "int32"),
        ("memory_usage", 3, "int32"),
        ("gpu_usage", 4, "int32"),
        ("gpu_memory_usage", 5, "int32"),
        ("token", 6, "string"),
    ),
    "TaskUsageResponse": (("success", 1, "bool"), ("message", 2, "string")),
    "RefreshTokenRequest": (("old_token", 1, "string"),),
    "RefreshTokenResponse": (("success", 1, "bool"), ("message", 2, "string"), ("new_token", 3, "string")),
    "TasklogRequest": (("task_id", 1, "string"), ("token", 2, "string")),
    "TasklogResponse": (("success", 1, "bool"), ("log", 2, "string")),
}

# HiveMind's four services: each method's request and answer messages.
SERVICES = {
    "UserService": {
        "Login": ("LoginRequest", "LoginResponse"),
        "Transfer": ("TransferRequest", "TransferResponse"),
        "GetBalance": ("GetBalanceRequest", "GetBalanceResponse"),
        "RefreshToken": ("RefreshTokenRequest", "RefreshTokenResponse"),
    },
    "NodeManagerService": {
        "RegisterWorkerNode": ("RegisterWorkerNodeRequest", "StatusResponse"),
        "ReportStatus": ("RunningStatusRequest", "RunningStatusResponse"),
    },
    "MasterNodeService": {
        "UploadTask": ("UploadTaskRequest", "UploadTaskResponse"),
        "GetTaskResult": ("GetTaskResultRequest", "GetTaskResultResponse"),
        "GetAllUserTasks": ("GetAllUserTasksRequest", "GetAllTasksResponse"),
        "StopTask": ("StopTaskRequest", "StopTaskResponse"),
        "GetTasklog": ("TasklogRequest", "TasklogResponse"),
    },
    "WorkerNodeService": {
        "ExecuteTask": ("ExecuteTaskRequest", "ExecuteTaskResponse"),
        "TaskOutputUpload": ("TaskOutputUploadRequest", "TaskOutputUploadResponse"),
        "TaskResultUpload": ("TaskResultUploadRequest", "TaskResultUploadResponse"),
        "TaskOutput": ("TaskOutputRequest", "TaskOutputResponse"),
        "StopTaskExecution": ("StopTaskExecutionRequest", "StopTaskExecutionResponse"),
        "TaskUsage": ("TaskUsageRequest", "TaskUsageResponse"),
    },
}


# -- a protobuf writer and reader, just enough for these messages --------------------------------------


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32/int64: ten bytes, two's complement, as protobuf sends them
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode(fields: tuple[Field, ...], values: dict[str, Any]) -> bytes:
    out = bytearray()
    for name, number, kind in fields:
        value = values[name]
        if kind in ("int32", "int64", "bool"):
            out += varint(number << 3 | 0) + varint(int(value))
        else:
            data = value.encode() if kind == "string" else value
            out += varint(number << 3 | 2) + varint(len(data)) + data
    return bytes(out)


def decode(data: bytes) -> dict[int, tuple[int, Any]]:
    """{field number: (wire type, value)}; varints read as unsigned 64-bit."""
    fields, i = {}, 0

    def read_varint() -> int:
        nonlocal i
        shift = result = 0
        while True:
            byte = data[i]
            i += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while i < len(data):
        key = read_varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            fields[number] = (0, read_varint())
        elif wire == 2:
            size = read_varint()
            fields[number] = (2, data[i : i + size])
            i += size
        else:
            raise AssertionError(f"field {number}: wire type {wire} is not HiveMind's")
    return fields


def sample(message: str, fields: tuple[Field, ...]) -> dict[str, Any]:
    """A distinct value per field: a 64-bit one in int64 fields, a negative one in some int32 ones."""
    values: dict[str, Any] = {}
    for name, number, kind in fields:
        values[name] = {
            "string": f"{message}.{name} ✓",
            "bytes": bytes([0, 255, number]) + name.encode(),
            "bool": True,
            "int32": -number if number % 2 else 1_000_000 + number,
            "int64": 2**40 + number,
        }[kind]
    return values


@pytest.mark.parametrize("message", sorted(HIVEMIND))
def test_every_field_hivemind_sends_arrives(message: str) -> None:
    fields = HIVEMIND[message]
    values = sample(message, fields)
    parsed = getattr(pb, message).FromString(encode(fields, values))
    for name, _, _ in fields:
        assert getattr(parsed, name) == values[name], f"{message}.{name}"


@pytest.mark.parametrize("message", sorted(HIVEMIND))
def test_every_field_we_send_is_where_hivemind_reads_it(message: str) -> None:
    fields = HIVEMIND[message]
    values = sample(message, fields)
    wire = decode(getattr(pb, message)(**values).SerializeToString())
    for name, number, kind in fields:
        expected = encode(((name, number, kind),), values)
        assert decode(expected)[number] == wire[number], f"{message}.{name}"
    assert set(wire) == {number for _, number, _ in fields}  # nothing extra when our additions are unset


def test_the_task_list_holds_hiveminds_task_infos() -> None:
    info = HIVEMIND["TaskInfo"]
    first, second = sample("TaskInfo", info), {**sample("TaskInfo", info), "task_id": "second"}
    data = b"".join(
        varint(1 << 3 | 2) + varint(len(body)) + body for body in (encode(info, first), encode(info, second))
    )
    parsed = pb.GetAllTasksResponse.FromString(data)
    assert [t.task_id for t in parsed.tasks] == [first["task_id"], "second"]
    assert parsed.tasks[0].worker_ip == first["worker_ip"] and parsed.tasks[0].gpu_usage == first["gpu_usage"]


def test_our_additions_sit_at_100_and_up_and_hiveminds_numbers_are_all_there() -> None:
    for message, fields in HIVEMIND.items():
        ours = getattr(pb, message).DESCRIPTOR
        hiveminds = {number for _, number, _ in fields}
        for field in ours.fields:
            assert field.number in hiveminds or field.number >= 100, f"{message}.{field.name}"


def test_the_services_and_methods_are_hiveminds() -> None:
    for service, methods in SERVICES.items():
        descriptor = pb.DESCRIPTOR.services_by_name[service]
        assert {m.name for m in descriptor.methods} == set(methods)
        for method, (request, answer) in methods.items():
            found = descriptor.methods_by_name[method]
            assert (found.input_type.name, found.output_type.name) == (request, answer)
