"""``gpupool poc dist`` (SPEC §7): the core's distances as JSON, and clear refusals of bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from gpupool.cli.app import app
from gpupool.cli.poc_cmds import parse_nonces
from gpupool.core.poc import PARAMS_TINY, compute_distances
from gpupool.errors import InvalidInput

BLOCK_HASH = "3f1c" * 16
PUBLIC_KEY = "ab" * 32


def dist(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["poc", "dist", *args])
    return result.exit_code, result.stdout, result.stderr


def test_dist_prints_the_core_distances_for_the_tiny_set() -> None:
    code, out, _ = dist(
        "--params", "tiny", "--block-hash", BLOCK_HASH, "--public-key", PUBLIC_KEY, "--nonces", "0-5,9,12-13"
    )
    assert code == 0, out
    body = json.loads(out)
    assert set(body) == {"params", "nonces", "dist"}
    assert body["params"] == PARAMS_TINY.to_dict()
    assert body["nonces"] == [0, 1, 2, 3, 4, 5, 9, 12, 13]
    # The same numbers as the library, to the last bit (json keeps a float's shortest repr exactly).
    assert body["dist"] == compute_distances(BLOCK_HASH, PUBLIC_KEY, body["nonces"], PARAMS_TINY).tolist()


def test_dist_is_the_same_in_another_process() -> None:
    args = ["--params", "tiny", "--block-hash", BLOCK_HASH, "--public-key", PUBLIC_KEY, "--nonces", "7,40-42"]
    child = subprocess.run(
        [sys.executable, "-m", "gpupool", "poc", "dist", *args], capture_output=True, text=True, check=True
    )
    assert json.loads(child.stdout) == json.loads(dist(*args)[1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--nonces", "5-3"), "need 0 <= start <= end"),
        (("--nonces", "a-b"), "bad nonce range"),
        (("--nonces", "-1"), "bad nonce range"),
        (("--nonces", "0-2000000"), "at most"),
        (("--nonces", "1", "--params", "v9"), "--params must be one of"),
        (("--nonces", "1", "--device", "tpu"), "--device must be cpu or cuda"),
        (("--nonces", "1", "--dtype", "int8"), "--dtype must be float32 or float16"),
        (("--nonces", "1", "--block-hash", " "), "must not be empty"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(args: tuple[str, ...], message: str) -> None:
    base = {"--params": "tiny", "--block-hash": BLOCK_HASH, "--public-key": PUBLIC_KEY}
    given = dict(zip(args[::2], args[1::2], strict=True))
    merged = [x for k, v in {**base, **given}.items() for x in (k, v)]
    code, out, err = dist(*merged)
    assert code == 2 and out == ""
    assert message in err


def test_torch_paths_say_torch_is_missing() -> None:
    try:
        import torch  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("torch is installed here: the refusal cannot happen")
    for extra in (["--device", "cuda"], ["--dtype", "float16"]):
        code, out, err = dist(
            "--params",
            "tiny",
            "--block-hash",
            BLOCK_HASH,
            "--public-key",
            PUBLIC_KEY,
            "--nonces",
            "1",
            *extra,
        )
        assert code == 1 and out == "" and "needs PyTorch" in err


def test_parse_nonces_keeps_the_order_given() -> None:
    assert parse_nonces("3, 0-1 ,7") == [3, 0, 1, 7]
    with pytest.raises(InvalidInput):
        parse_nonces("")
