"""Hub settings: an operator's half-filled .env must not weaken the production checks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gpupool.config import HubSettings


def test_production_hub_refuses_an_empty_or_short_jwt_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUPOOL_HUB_DEV_MODE", "false")
    for secret in ("", "short"):
        monkeypatch.setenv("GPUPOOL_HUB_JWT_SECRET", secret)
        with pytest.raises(ValidationError, match="GPUPOOL_HUB_JWT_SECRET must be set"):
            HubSettings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.setenv("GPUPOOL_HUB_JWT_SECRET", "x" * 32)
    assert HubSettings(_env_file=None).jwt_secret is not None  # type: ignore[call-arg]


def test_an_empty_variable_falls_back_to_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUPOOL_HUB_PORT", "")
    assert HubSettings(_env_file=None).port == 8203  # type: ignore[call-arg]
