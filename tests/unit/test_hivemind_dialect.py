"""HiveMind's words and units against the hub's, and the zip a HiveMind worker is sent."""

from __future__ import annotations

import io
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest

from gpupool.core.scheduling import TaskState
from gpupool.errors import InvalidInput
from gpupool.hub.dialout import DialedNode, Dispatch, dialed_miner_id, parse_networks
from gpupool.hub.files import TaskFiles
from gpupool.rpc import hivemind
from gpupool.rpc.workers import entrypoint


def test_every_state_has_one_of_hiveminds_five_statuses() -> None:
    assert {s: hivemind.status_of(s) for s in TaskState} == {
        TaskState.QUEUED: "PENDING",
        TaskState.ASSIGNED: "PENDING",
        TaskState.RUNNING: "RUNNING",
        TaskState.SUCCEEDED: "COMPLETED",
        TaskState.FAILED: "FAILED",
        TaskState.EXPIRED: "FAILED",
        TaskState.STOPPED: "STOPPED",
    }


@pytest.mark.parametrize(
    ("micro", "tokens"), [(0, 0), (999_999, 0), (1_000_000, 1), (49_999_156, 49), (-1, -1)]
)
def test_balances_are_whole_tokens_rounded_down(micro: int, tokens: int) -> None:
    assert hivemind.whole_tokens(micro) == tokens


def test_an_amount_is_whole_tokens_or_its_exact_figure_and_never_two_that_disagree() -> None:
    assert hivemind.micro_of(3, 0, "amount") == 3_000_000
    assert hivemind.micro_of(0, 250_000, "amount") == 250_000
    assert hivemind.micro_of(2, 2_000_000, "amount") == 2_000_000
    with pytest.raises(InvalidInput) as caught:
        hivemind.micro_of(2, 1_500_000, "amount")
    assert caught.value.details["field"] == "amount"


@pytest.mark.parametrize(
    ("location", "region"),
    [
        ("Any", None),
        ("any", None),
        ("", None),
        ("*", None),
        (" Any ", None),
        ("Asia", "Asia"),
        ("eu-west", "eu-west"),
    ],
)
def test_any_empty_or_star_is_no_region(location: str, region: str | None) -> None:
    assert hivemind.region_of(location) == region


def test_int32_figures_are_held_inside_the_type() -> None:
    assert (hivemind.int32(49.6), hivemind.int32(1e12), hivemind.int32(-1e12)) == (50, 2**31 - 1, -(2**31))


def zipped(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return out.getvalue()


@pytest.mark.parametrize(
    ("files", "exit_code"),
    [
        ({"execution_log.txt": b"Task ID: t\nStatus: Success\nTime: now\n"}, 0),
        ({"execution_log.txt": b"Task ID: t\nStatus: Failed\n"}, 1),
        ({"execution_log.txt": b"Status: Stopped by user\n"}, None),
        ({"execution_log.txt": b"nothing said\n"}, None),
        ({"answer.txt": b"42"}, None),
        ({"execution_log.txt": b"Status: Failed\n" + b"x" * 70_000}, None),  # not read past 64 kB
    ],
)
def test_a_workers_result_zip_says_how_its_task_ended(files: dict[str, bytes], exit_code: int | None) -> None:
    assert hivemind.exit_code_of_result(zipped(files)) == exit_code


def test_a_damaged_result_zip_says_nothing() -> None:
    assert hivemind.exit_code_of_result(b"PK\x03\x04 broken") is None
    assert hivemind.exit_code_of_result(b"") is None


def dispatch(command: tuple[str, ...], env: dict[str, str] | None = None) -> Dispatch:
    def never(extra: dict[str, bytes], renames: dict[str, str]) -> bytes:
        raise AssertionError("not called")

    return Dispatch("t", command, env or {}, 60.0, {}, never)


def test_a_worker_runs_its_own_entry_points_as_they_are() -> None:
    for command in (("sh", "run.sh"), ("bash", "run.sh"), ("python3", "main.py")):
        assert entrypoint(dispatch(command)) == ({}, {})


def test_another_command_or_an_env_goes_into_a_run_sh_the_hub_writes(tmp_path: Path) -> None:
    extra, renames = entrypoint(dispatch(("python3", "-c", "print('a b')"), {"A": "x y", "bad-name": "z"}))
    assert renames == {}
    assert extra["run.sh"] == b"#!/bin/sh\nexport A='x y'\nexec python3 -c 'print('\"'\"'a b'\"'\"')'\n"
    script = tmp_path / "run.sh"
    script.write_bytes(extra["run.sh"].replace(b"python3", b"echo"))
    assert subprocess.run(["sh", str(script)], capture_output=True, check=True).stdout == b"-c print('a b')\n"

    extra, renames = entrypoint(dispatch(("bash", "run.sh", "--fast"), {"N": "1"}))
    assert renames == {"run.sh": "task-run.sh"}
    assert extra["run.sh"].endswith(b"exec bash task-run.sh --fast\n")


def test_the_bundle_goes_out_as_a_zip_with_its_modes_renames_and_extra_files(tmp_path: Path) -> None:
    files = TaskFiles(tmp_path, 10 * 2**20)
    staged = tmp_path / "staged.tar.gz"
    upload = io.BytesIO()
    with zipfile.ZipFile(upload, "w") as archive:
        run = zipfile.ZipInfo("run.sh")
        run.external_attr = (0o755 | stat.S_IFREG) << 16
        archive.writestr(run, b"echo mine\n")
        archive.writestr("data/in.txt", b"21\n")
    files.bundle_from_zip(upload.getvalue(), staged)
    (files.task_dir("t1")).mkdir(parents=True)
    staged.replace(files.task_dir("t1") / "bundle.tar.gz")

    out = files.bundle_zip("t1", {"run.sh": b"exec sh task-run.sh\n"}, {"run.sh": "task-run.sh"})
    with zipfile.ZipFile(io.BytesIO(out)) as archive:
        assert sorted(archive.namelist()) == ["data/in.txt", "run.sh", "task-run.sh"]
        assert archive.read("task-run.sh") == b"echo mine\n" and archive.read("data/in.txt") == b"21\n"
        assert archive.getinfo("task-run.sh").external_attr >> 16 & 0o777 == 0o755
        assert archive.getinfo("data/in.txt").external_attr >> 16 & 0o777 == 0o644
    with zipfile.ZipFile(io.BytesIO(files.bundle_zip("none", {"run.sh": b"true\n"}))) as archive:
        assert archive.namelist() == ["run.sh"]  # a task without files: the hub's run.sh alone


def test_a_dialed_node_is_one_per_user_and_address() -> None:
    first = dialed_miner_id("bob", "10.0.0.1:50053")
    assert first == dialed_miner_id("bob", "10.0.0.1:50053") and first.startswith("bob-")
    assert first != dialed_miner_id("bob", "10.0.0.1:50054") != dialed_miner_id("eve", "10.0.0.1:50053")
    assert len(dialed_miner_id("x" * 64, "[::1]:1")) <= 64
    assert DialedNode("bob", "::1", 50053).address == "[::1]:50053"
    assert [str(n) for n in parse_networks(["10.0.0.0/8", " ", "fd00::/8"])] == ["10.0.0.0/8", "fd00::/8"]
