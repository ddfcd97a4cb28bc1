"""Bodies of the task endpoints (SPEC §3.4)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from gpupool import wire
from gpupool.api.schemas_registry import MicroAmount, RequirementsIn, TokensAsMicro, twin
from gpupool.bounds import (
    MAX_COMMAND_ARG_CHARS,
    MAX_COMMAND_ARGS,
    MAX_ENV_NAME_CHARS,
    MAX_ENV_VALUE_CHARS,
    MAX_ENV_VARS,
)
from gpupool.errors import InvalidInput
from gpupool.hub.tasks import NewTask

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
    max_price_token_per_ksec: TokensAsMicro | None = Field(None, description="price cap, tokens per ksec")
    max_price_micro_per_ksec: MicroAmount | None = Field(None, description="the same cap in micro-units")
    timeout_sec: float = Field(3600, gt=0, le=7 * 86400)
    max_attempts: StrictInt = Field(3, ge=1, le=20)

    @model_validator(mode="after")
    def _one_cap(self) -> TaskIn:
        cap = twin(self.max_price_token_per_ksec, self.max_price_micro_per_ksec, "max_price_token_per_ksec")
        if not cap:  # raised past pydantic so that the 422 names the field
            given = "max_price_micro_per_ksec" if self.max_price_micro_per_ksec is not None else "token"
            field = given if given != "token" else "max_price_token_per_ksec"
            raise InvalidInput("a price cap above 0 is required", field=field)
        self.max_price_micro_per_ksec = cap
        return self

    def to_new_task(self) -> NewTask:
        return NewTask(
            name=self.name,
            command=self.command,
            env=self.env,
            requirements=self.requirements.model_dump(exclude_none=True),
            price_cap_micro_per_ksec=self.max_price_micro_per_ksec or 0,
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
    price_token_per_ksec: float | None
    price_micro_per_ksec: int | None
    cost: int | None
    usage: dict[str, Any] | None
    waiting_reason: str | None = Field(
        None, description="a queued task: why no node has taken it yet, from the matcher's filters"
    )


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


OutputIn = wire.OutputChunk  # a node's output chunk: the wire contract's own type


class OutputAck(BaseModel):
    task_id: str
    seq: int
    stored: bool
