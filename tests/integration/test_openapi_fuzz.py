"""schemathesis against the hub's own ``/openapi.json``, as a user and as an admin, every check on.

A bounded, seeded run (examples, coverage and fuzzing phases; a few cases per operation) over the
in-process app on SQLite: no request may end in a 500, and every response must be one the document
declares, with the body, media type and headers it declares. The document is the API.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi

from gpupool.config import HubSettings
from gpupool.main import build_app
from tests.conftest import ADMIN_PASSWORD

MAX_EXAMPLES = 3  # fuzzing cases per operation and role; the coverage phase adds its own few

ACCEPTED = ["2xx", "401", "402", "403", "404", "409", "429"]
ACCEPTED_OR_422 = [*ACCEPTED, "422"]
REJECTED = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]

CONFIG = {
    "seed": 20261203,
    "request-timeout": 60,  # a batch of 1,000 tasks on a loaded 2-core machine takes seconds
    "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
    "generation": {"max-examples": MAX_EXAMPLES, "no-shrink": True, "database": "none"},
    "phases": {
        "examples": {"enabled": True},
        "coverage": {"enabled": True},
        "fuzzing": {"enabled": True},
        "stateful": {"enabled": False},
    },
    "checks": {
        "enabled": True,
        # 402: a schema-valid payment the balance does not cover is refused, as it must be.
        "positive_data_acceptance": {"expected-statuses": ACCEPTED},
        # 413: a body over its size limit is refused before it is parsed; that is a rejection too.
        "negative_data_rejection": {"expected-statuses": REJECTED},
    },
    "operations": [
        {
            "include-method": method,
            "include-path": path,
            "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED_OR_422}},
        }
        for method, path in (
            # A key on the secp256k1 curve, an EIP-55 checksum, a signature: valid by arithmetic no
            # schema can state, so a schema-valid value may still be a 422 naming the field.
            ("GET", "/permissions/{pubkey}"),
            ("POST", "/v1/admin/workers/{pubkey}/approve"),
            ("POST", "/v1/miners/register"),
            ("POST", "/workers"),
            ("POST", "/v1/poc/batches"),
            ("POST", "/v1/admin/allowlist"),
            ("DELETE", "/v1/admin/allowlist/{entry}"),
            ("POST", "/v1/transfers"),
            ("POST", "/v1/admin/mint"),
            ("POST", "/v1/admin/api-keys"),
            ("GET", "/v1/rewards/balance"),
            ("GET", "/v1/contributions/stats"),
            ("GET", "/v1/admin/accounts/{account}"),  # system accounts are not a pattern either
            # State, or one field against another: an epoch still running, params_name with params,
            # a multipart form whose spec field holds the JSON of a task.
            ("POST", "/v1/rewards/distribute"),
            ("POST", "/v1/admin/poc/rounds"),
            ("POST", "/v1/tasks"),
        )
    ],
}


# Built at import, started (lifespan) by the first request of a selected test; schemathesis keeps an
# ASGI app running until the interpreter exits, so the hub's files live in a directory that does too.
_ROOT = tempfile.TemporaryDirectory(prefix="gpupool-fuzz-")
_SETTINGS = HubSettings.model_validate(
    {
        "db_url": f"sqlite:///{_ROOT.name}/gpupool.db",
        "data_dir": Path(_ROOT.name) / "hub-data",
        "storage_path": Path(_ROOT.name) / "artifacts",
        "admin_password": ADMIN_PASSWORD,
        "jwt_secret": "fuzz-jwt-secret-0123456789abcdef0123456789",
        "argon2_time_cost": 1,
        "argon2_memory_kib": 64,
        "grpc_enabled": False,
        "rate_limit": "100000/second",
    }
)
APP = build_app(_SETTINGS)
schema = schemathesis.openapi.from_dict(APP.openapi(), config=SchemathesisConfig.from_dict(CONFIG))
schema.app, schema.location = APP, "/openapi.json"


@pytest.fixture(scope="module")
def tokens() -> dict[str, dict[str, str]]:
    """Bearer headers of the admin and of a funded user, made through the API itself."""
    with asgi.get_client(APP) as client:
        base = "http://localhost"

        def login(username: str, password: str) -> dict[str, str]:
            resp = client.post(f"{base}/v1/auth/login", json={"username": username, "password": password})
            assert resp.status_code == 200, resp.text
            return {"Authorization": f"Bearer {resp.json()['access_token']}"}

        admin = login("admin", ADMIN_PASSWORD)
        user = {"username": "fuzzer", "password": "fuzzer-password", "role": "user"}
        assert client.post(f"{base}/v1/users", json=user, headers=admin).status_code == 201
        mint = {"to": "fuzzer", "amount": 10**12, "idempotency_key": "fund-fuzzer"}
        assert client.post(f"{base}/v1/admin/mint", json=mint, headers=admin).status_code == 201
        return {"admin": admin, "user": login("fuzzer", "fuzzer-password")}


@schema.parametrize()
def test_api_as_a_user(case: Any, tokens: dict[str, dict[str, str]]) -> None:
    case.call_and_validate(headers={**(case.headers or {}), **tokens["user"]})


@schema.parametrize()
def test_api_as_an_admin(case: Any, tokens: dict[str, dict[str, str]]) -> None:
    case.call_and_validate(headers={**(case.headers or {}), **tokens["admin"]})
