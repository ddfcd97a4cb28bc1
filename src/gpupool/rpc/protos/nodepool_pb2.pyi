from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LoginRequest(_message.Message):
    __slots__ = ("username", "password")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    username: str
    password: str
    def __init__(self, username: _Optional[str] = ..., password: _Optional[str] = ...) -> None: ...

class LoginResponse(_message.Message):
    __slots__ = ("success", "message", "token", "refresh_token", "expires_in")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    REFRESH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    token: str
    refresh_token: str
    expires_in: int
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., token: _Optional[str] = ..., refresh_token: _Optional[str] = ..., expires_in: _Optional[int] = ...) -> None: ...

class TransferRequest(_message.Message):
    __slots__ = ("token", "receiver_username", "amount", "idempotency_key", "amount_micro")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_USERNAME_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MICRO_FIELD_NUMBER: _ClassVar[int]
    token: str
    receiver_username: str
    amount: int
    idempotency_key: str
    amount_micro: int
    def __init__(self, token: _Optional[str] = ..., receiver_username: _Optional[str] = ..., amount: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., amount_micro: _Optional[int] = ...) -> None: ...

class TransferResponse(_message.Message):
    __slots__ = ("success", "message", "transfer_id", "replayed", "amount_micro")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MICRO_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    transfer_id: int
    replayed: bool
    amount_micro: int
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., transfer_id: _Optional[int] = ..., replayed: _Optional[bool] = ..., amount_micro: _Optional[int] = ...) -> None: ...

class GetBalanceRequest(_message.Message):
    __slots__ = ("username", "token")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    username: str
    token: str
    def __init__(self, username: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class GetBalanceResponse(_message.Message):
    __slots__ = ("success", "message", "balance", "balance_micro", "held_micro")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    BALANCE_MICRO_FIELD_NUMBER: _ClassVar[int]
    HELD_MICRO_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    balance: int
    balance_micro: int
    held_micro: int
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., balance: _Optional[int] = ..., balance_micro: _Optional[int] = ..., held_micro: _Optional[int] = ...) -> None: ...

class RefreshTokenRequest(_message.Message):
    __slots__ = ("old_token",)
    OLD_TOKEN_FIELD_NUMBER: _ClassVar[int]
    old_token: str
    def __init__(self, old_token: _Optional[str] = ...) -> None: ...

class RefreshTokenResponse(_message.Message):
    __slots__ = ("success", "message", "new_token", "refresh_token", "expires_in")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NEW_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REFRESH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    new_token: str
    refresh_token: str
    expires_in: int
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., new_token: _Optional[str] = ..., refresh_token: _Optional[str] = ..., expires_in: _Optional[int] = ...) -> None: ...

class RegisterWorkerNodeRequest(_message.Message):
    __slots__ = ("node_id", "hostname", "cpu_cores", "memory_gb", "cpu_score", "gpu_score", "gpu_memory_gb", "location", "port", "gpu_name", "docker_status")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_GB_FIELD_NUMBER: _ClassVar[int]
    CPU_SCORE_FIELD_NUMBER: _ClassVar[int]
    GPU_SCORE_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_GB_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    GPU_NAME_FIELD_NUMBER: _ClassVar[int]
    DOCKER_STATUS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    hostname: str
    cpu_cores: int
    memory_gb: int
    cpu_score: int
    gpu_score: int
    gpu_memory_gb: int
    location: str
    port: int
    gpu_name: str
    docker_status: str
    def __init__(self, node_id: _Optional[str] = ..., hostname: _Optional[str] = ..., cpu_cores: _Optional[int] = ..., memory_gb: _Optional[int] = ..., cpu_score: _Optional[int] = ..., gpu_score: _Optional[int] = ..., gpu_memory_gb: _Optional[int] = ..., location: _Optional[str] = ..., port: _Optional[int] = ..., gpu_name: _Optional[str] = ..., docker_status: _Optional[str] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("success", "message", "miner_id")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MINER_ID_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    miner_id: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., miner_id: _Optional[str] = ...) -> None: ...

class RunningStatusRequest(_message.Message):
    __slots__ = ("node_id", "status", "cpu_usage", "memory_usage", "gpu_usage", "gpu_memory_usage", "docker_status", "running_tasks", "session_token")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USAGE_FIELD_NUMBER: _ClassVar[int]
    GPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_USAGE_FIELD_NUMBER: _ClassVar[int]
    DOCKER_STATUS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_TASKS_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    status: str
    cpu_usage: int
    memory_usage: int
    gpu_usage: int
    gpu_memory_usage: int
    docker_status: str
    running_tasks: int
    session_token: str
    def __init__(self, node_id: _Optional[str] = ..., status: _Optional[str] = ..., cpu_usage: _Optional[int] = ..., memory_usage: _Optional[int] = ..., gpu_usage: _Optional[int] = ..., gpu_memory_usage: _Optional[int] = ..., docker_status: _Optional[str] = ..., running_tasks: _Optional[int] = ..., session_token: _Optional[str] = ...) -> None: ...

class RunningStatusResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class UploadTaskRequest(_message.Message):
    __slots__ = ("task_id", "task_zip", "memory_gb", "cpu_score", "gpu_score", "gpu_memory_gb", "location", "gpu_name", "token", "command", "max_price_micro_per_ksec", "timeout_sec", "max_attempts", "env", "gpu_count")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ZIP_FIELD_NUMBER: _ClassVar[int]
    MEMORY_GB_FIELD_NUMBER: _ClassVar[int]
    CPU_SCORE_FIELD_NUMBER: _ClassVar[int]
    GPU_SCORE_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_GB_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    GPU_NAME_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    MAX_PRICE_MICRO_PER_KSEC_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SEC_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    GPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    task_zip: bytes
    memory_gb: int
    cpu_score: int
    gpu_score: int
    gpu_memory_gb: int
    location: str
    gpu_name: str
    token: str
    command: _containers.RepeatedScalarFieldContainer[str]
    max_price_micro_per_ksec: int
    timeout_sec: float
    max_attempts: int
    env: _containers.ScalarMap[str, str]
    gpu_count: int
    def __init__(self, task_id: _Optional[str] = ..., task_zip: _Optional[bytes] = ..., memory_gb: _Optional[int] = ..., cpu_score: _Optional[int] = ..., gpu_score: _Optional[int] = ..., gpu_memory_gb: _Optional[int] = ..., location: _Optional[str] = ..., gpu_name: _Optional[str] = ..., token: _Optional[str] = ..., command: _Optional[_Iterable[str]] = ..., max_price_micro_per_ksec: _Optional[int] = ..., timeout_sec: _Optional[float] = ..., max_attempts: _Optional[int] = ..., env: _Optional[_Mapping[str, str]] = ..., gpu_count: _Optional[int] = ...) -> None: ...

class UploadTaskResponse(_message.Message):
    __slots__ = ("success", "message", "task_id", "status", "hold_micro")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    HOLD_MICRO_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    task_id: str
    status: str
    hold_micro: int
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., task_id: _Optional[str] = ..., status: _Optional[str] = ..., hold_micro: _Optional[int] = ...) -> None: ...

class GetAllUserTasksRequest(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class GetAllTasksResponse(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskInfo]
    def __init__(self, tasks: _Optional[_Iterable[_Union[TaskInfo, _Mapping]]] = ...) -> None: ...

class TaskInfo(_message.Message):
    __slots__ = ("task_id", "status", "message", "cpu_usage", "memory_usage", "gpu_usage", "gpu_memory_usage", "worker_ip", "cost_micro", "state", "duration_sec")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USAGE_FIELD_NUMBER: _ClassVar[int]
    GPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_USAGE_FIELD_NUMBER: _ClassVar[int]
    WORKER_IP_FIELD_NUMBER: _ClassVar[int]
    COST_MICRO_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DURATION_SEC_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    status: str
    message: str
    cpu_usage: int
    memory_usage: int
    gpu_usage: int
    gpu_memory_usage: int
    worker_ip: str
    cost_micro: int
    state: str
    duration_sec: float
    def __init__(self, task_id: _Optional[str] = ..., status: _Optional[str] = ..., message: _Optional[str] = ..., cpu_usage: _Optional[int] = ..., memory_usage: _Optional[int] = ..., gpu_usage: _Optional[int] = ..., gpu_memory_usage: _Optional[int] = ..., worker_ip: _Optional[str] = ..., cost_micro: _Optional[int] = ..., state: _Optional[str] = ..., duration_sec: _Optional[float] = ...) -> None: ...

class TaskOutputUploadRequest(_message.Message):
    __slots__ = ("task_id", "output", "token", "seq", "stream")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    output: str
    token: str
    seq: int
    stream: str
    def __init__(self, task_id: _Optional[str] = ..., output: _Optional[str] = ..., token: _Optional[str] = ..., seq: _Optional[int] = ..., stream: _Optional[str] = ...) -> None: ...

class TaskOutputUploadResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class TaskResultUploadRequest(_message.Message):
    __slots__ = ("task_id", "result_zip", "token", "signed_result")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_ZIP_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SIGNED_RESULT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    result_zip: bytes
    token: str
    signed_result: str
    def __init__(self, task_id: _Optional[str] = ..., result_zip: _Optional[bytes] = ..., token: _Optional[str] = ..., signed_result: _Optional[str] = ...) -> None: ...

class TaskResultUploadResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class GetTaskResultRequest(_message.Message):
    __slots__ = ("task_id", "token")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    token: str
    def __init__(self, task_id: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class GetTaskResultResponse(_message.Message):
    __slots__ = ("success", "message", "result_zip", "status", "exit_code")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESULT_ZIP_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    result_zip: bytes
    status: str
    exit_code: int
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., result_zip: _Optional[bytes] = ..., status: _Optional[str] = ..., exit_code: _Optional[int] = ...) -> None: ...

class ExecuteTaskRequest(_message.Message):
    __slots__ = ("task_id", "task_zip", "cpu_usage", "gpu_usage", "memory_gb", "gpu_memory_gb")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ZIP_FIELD_NUMBER: _ClassVar[int]
    CPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    GPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_GB_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_GB_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    task_zip: bytes
    cpu_usage: int
    gpu_usage: int
    memory_gb: int
    gpu_memory_gb: int
    def __init__(self, task_id: _Optional[str] = ..., task_zip: _Optional[bytes] = ..., cpu_usage: _Optional[int] = ..., gpu_usage: _Optional[int] = ..., memory_gb: _Optional[int] = ..., gpu_memory_gb: _Optional[int] = ...) -> None: ...

class ExecuteTaskResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class TaskOutputRequest(_message.Message):
    __slots__ = ("task_id", "output", "token")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    output: str
    token: str
    def __init__(self, task_id: _Optional[str] = ..., output: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class TaskOutputResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class StopTaskRequest(_message.Message):
    __slots__ = ("task_id", "token")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    token: str
    def __init__(self, task_id: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class StopTaskResponse(_message.Message):
    __slots__ = ("success", "message", "status")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    status: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., status: _Optional[str] = ...) -> None: ...

class StopTaskExecutionRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class StopTaskExecutionResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class TaskUsageRequest(_message.Message):
    __slots__ = ("task_id", "cpu_usage", "memory_usage", "gpu_usage", "gpu_memory_usage", "token")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USAGE_FIELD_NUMBER: _ClassVar[int]
    GPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_USAGE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    cpu_usage: int
    memory_usage: int
    gpu_usage: int
    gpu_memory_usage: int
    token: str
    def __init__(self, task_id: _Optional[str] = ..., cpu_usage: _Optional[int] = ..., memory_usage: _Optional[int] = ..., gpu_usage: _Optional[int] = ..., gpu_memory_usage: _Optional[int] = ..., token: _Optional[str] = ...) -> None: ...

class TaskUsageResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class TasklogRequest(_message.Message):
    __slots__ = ("task_id", "token")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    token: str
    def __init__(self, task_id: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class TasklogResponse(_message.Message):
    __slots__ = ("success", "log")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    success: bool
    log: str
    def __init__(self, success: _Optional[bool] = ..., log: _Optional[str] = ...) -> None: ...
