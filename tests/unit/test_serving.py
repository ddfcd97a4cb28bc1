"""Tokens in query strings never reach a log line."""

from __future__ import annotations

import logging

import pytest

from gpupool.serving import RedactSecrets, redact_server_logs


def test_session_token_in_a_websocket_log_line_is_masked(caplog: pytest.LogCaptureFixture) -> None:
    redact_server_logs()
    logger = logging.getLogger("uvicorn.error")
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    with caplog.at_level(logging.INFO, logger="uvicorn.error"):
        logger.info(
            '%s - "WebSocket %s" [accepted]',
            ("127.0.0.1", 5),
            "/v1/miners/heartbeat?session_token=gps_SECRET1",
        )
        logging.getLogger("uvicorn.access").info("GET /x?auth_token=SECRET2&page=2 200")
    text = caplog.text
    assert "SECRET1" not in text and "SECRET2" not in text
    assert "session_token=***" in text and "auth_token=***&page=2" in text


def test_filter_keeps_records_without_secrets_intact() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, "GET %s %d", ("/v1/health", 200), None
    )
    assert RedactSecrets().filter(record) is True
    assert record.getMessage() == "GET /v1/health 200"
