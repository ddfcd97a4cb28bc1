"""The OpenAPI document says what the hub answers: every error status with its body, the SSE stream,
and a 405 whose Allow lists every method of the path (schemathesis checks the rest at random)."""

from __future__ import annotations

from typing import Any

from tests.conftest import HubClient

ERROR = {"$ref": "#/components/schemas/ErrorBody"}


async def test_every_error_status_is_declared_with_the_error_body(hub_client: HubClient) -> None:
    doc: dict[str, Any] = (await hub_client.http.get("/openapi.json")).json()
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    assert response["content"]["application/json"]["schema"] == ERROR, (method, path, status)
    transfers = doc["paths"]["/v1/transfers"]["post"]["responses"]
    assert {"401", "402", "409", "413", "422"} <= set(transfers)
    assert {"401", "403"} <= set(doc["paths"]["/v1/miners"]["get"]["responses"])  # admin only
    assert "429" in doc["paths"]["/v1/miners/register"]["post"]["responses"]
    assert "404" in doc["paths"]["/v1/tasks/{task_id}"]["get"]["responses"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    output = doc["paths"]["/v1/tasks/{task_id}/output"]["get"]["responses"]["200"]["content"]
    assert list(output) == ["text/event-stream"]


async def test_a_405_allows_every_method_of_the_path(hub_client: HubClient) -> None:
    user = await hub_client.make_user("allow")
    resp = await hub_client.http.delete("/v1/tasks/abc/output", headers=user)
    assert resp.status_code == 405 and resp.json()["error"]["code"] == "method_not_allowed"
    assert set(resp.headers["allow"].split(", ")) == {"GET", "POST"}
    resp = await hub_client.http.put("/v1/tasks", headers=user)
    assert set(resp.headers["allow"].split(", ")) == {"GET", "POST"}
    resp = await hub_client.http.get("/v1/transfers/x", headers=user)
    assert resp.status_code == 404
