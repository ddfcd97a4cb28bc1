"""The one table from error class to gRPC status code, looked up along the raised class's MRO.

The hub's snake_case error code travels in the trailing metadata key ``gpupool-error-code``, so a
client can tell ``invalid_credentials`` from ``token_expired`` the way an HTTP client reads the body.
"""

from __future__ import annotations

import grpc

from gpupool import errors

GRPC_STATUS: dict[type[errors.GpupoolError], grpc.StatusCode] = {
    errors.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.Forbidden: grpc.StatusCode.PERMISSION_DENIED,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.Conflict: grpc.StatusCode.FAILED_PRECONDITION,
    errors.IdempotencyConflict: grpc.StatusCode.ALREADY_EXISTS,
    errors.PaymentRequired: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
}

ERROR_CODE_KEY = "gpupool-error-code"


def grpc_status_for(exc: errors.GpupoolError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in GRPC_STATUS:
            return GRPC_STATUS[cls]
    return grpc.StatusCode.INTERNAL
