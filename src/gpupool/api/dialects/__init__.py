"""Seed systems' wires (SPEC §8): thin adapters translating their requests into the hub's services."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def parsed(model: type[M], raw: Any) -> M:
    """A body validated by hand (one route, two wires) answers bad input as FastAPI would: a 422."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc
