"""Bodies of the task endpoints (SPEC §3.4)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from gpupool.api.schemas_registry import RequirementsIn
from gpupool.bounds import (
    MAX_COMMAND_ARG_CHARS,
    MAX_COMMAND_ARGS,
    MAX_ENV_NAME_CHARS,
    MAX_ENV_VALUE_CHARS,
    MAX_ENV_VARS,
    NonNegInt64,
)
from gpupool.hub.tasks import MAX_OUTPUT_CHUNK, NewTask

CommandArg = Annotated[str, Field(max_length=MAX_COMMAND_ARG_CHARS)]
EnvName = Annotated[str, Field(min_length=1, max_length=MAX_ENV_NAME_CHARS)]
EnvValue = Annotated[str, Field(max_length=MAX_ENV_VALUE_CHARS)]


class TaskRequirementsIn(RequirementsIn):
    region: str | None = Field(None, max_length=64)


class TaskIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field("task", min_length=1, max_length=128)
    command: list[CommandArg] = Field(min_length=1, max_length=MAX_COMMAND_ARGS)
    env: dict[EnvName, EnvValue] = Field(default_factory=dict, max_length=MAX_ENV_VARS)
    requirements: TaskRequirementsIn = Field(default_factory=TaskRequirementsIn)
    max_price_token_per_ksec: StrictInt = Field(
        gt=0, le=10**15, description="price cap, micro-units per ksec"
    )
    timeout_sec: float = Field(3600, gt=0, le=7 * 86400)
    max_attempts: StrictInt = Field(3, ge=1, le=20)

    def to_new_task(self) -> NewTask:
        return NewTask(
            name=self.name,
            command=self.command,
            env=self.env,
            requirements=self.requirements.model_dump(exclude_none=True),
            price_cap_micro_per_ksec=self.max_price_token_per_ksec,
            timeout_sec=self.timeout_sec,
            max_attempts=self.max_attempts,
        )


class TaskOut(BaseModel):
    task_id: str
    name: str
    status: str
    owner: str
    miner_id: str | None
    attempts: int
    max_attempts: int
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    exit_code: int | None
    outcome: str | None
    hold: int
    price_token_per_ksec: int | None
    cost: int | None
    usage: dict[str, Any] | None


class SubmittedOut(BaseModel):
    task_id: str
    status: str
    hold: int


class TaskBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tasks: list[TaskIn] = Field(min_length=1, max_length=1000)


class BatchItemOut(BaseModel):
    """One task of a batch: submitted (``task_id``, ``status``, ``hold``) or refused (``error``)."""

    task_id: str | None = None
    status: str | None = None
    hold: int | None = None
    error: dict[str, Any] | None = None


class TaskBatchOut(BaseModel):
    tasks: list[BatchItemOut]


class ResultOut(BaseModel):
    task_id: str
    status: str
    exit_code: int | None
    artifacts: list[dict[str, Any]]


class OutputIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seq: NonNegInt64
    stream: Literal["stdout", "stderr"]
    data: str = Field(max_length=MAX_OUTPUT_CHUNK)


class OutputAck(BaseModel):
    task_id: str
    seq: int
    stored: bool
