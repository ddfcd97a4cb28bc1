"""The DStack mining backend's registry calls, version by version (seed 000, SPEC §8.4).

Its ``WorkerRegistration`` is ``{pubkey, owner, node_type}`` sent unsigned as JSON; its
``PermissionResponse`` reads ``registered`` (0b70e9a, be2f3ad) or ``write.mode`` (2543f46 on); its
``WorkerStatusResponse`` (b6a4dfc) is ``{pubkey, owner: String, node_type, mint_tx_hash: Option}``;
ed5b614 and later call ``GET /workers/{pubkey}`` and register when it is 404.
"""

from __future__ import annotations

from gpupool import crypto
from tests.conftest import HubClient
from tests.factories import OWNER

NODE_TYPE = "node-H200x8"


def backend_registration(pubkey: str) -> dict[str, str]:
    return {"pubkey": pubkey, "owner": OWNER, "node_type": NODE_TYPE}


async def test_0b70e9a_and_be2f3ad_read_registered_then_post_workers(hub_client: HubClient) -> None:
    pubkey = crypto.KeyPair.generate().pubkey
    perms = (await hub_client.http.get(f"/permissions/{pubkey}")).json()
    assert perms["registered"] is False
    resp = await hub_client.http.post("/workers", json=backend_registration(pubkey))
    assert resp.is_success
    perms = (await hub_client.http.get(f"/permissions/{pubkey}")).json()
    assert perms["registered"] is True  # it skips registering again
    assert perms["owner"] == OWNER and perms["signed"] is False and perms["authorized"] is False


async def test_2543f46_on_waits_for_write_mode_allow_all(hub_client: HubClient) -> None:
    pubkey = crypto.KeyPair.generate().pubkey
    await hub_client.http.post("/workers", json=backend_registration(pubkey))
    assert (await hub_client.http.get(f"/permissions/{pubkey}")).json()["write"] == {"mode": "Deny"}
    admin = await hub_client.admin_headers()
    assert (await hub_client.http.post(f"/v1/admin/workers/{pubkey}/approve", headers=admin)).is_success
    assert (await hub_client.http.get(f"/permissions/{pubkey}")).json()["write"] == {"mode": "AllowAll"}


async def test_b6a4dfc_polls_workers_until_its_mint_tx_hash_appears(hub_client: HubClient) -> None:
    pubkey = crypto.KeyPair.generate().pubkey
    assert (await hub_client.http.post("/workers", json=backend_registration(pubkey))).is_success
    status = (await hub_client.http.get(f"/workers/{pubkey}")).json()
    # WorkerStatusResponse: owner is a String (not Option), mint_tx_hash an Option.
    assert status["pubkey"] == pubkey and status["owner"] == OWNER and status["node_type"] == NODE_TYPE
    assert status["mint_tx_hash"] is None  # "Worker is minting... (no tx hash yet)": pending approval
    admin = await hub_client.admin_headers()
    await hub_client.http.post(f"/v1/admin/workers/{pubkey}/approve", headers=admin)
    status = (await hub_client.http.get(f"/workers/{pubkey}")).json()
    assert status["mint_tx_hash"].startswith("0x") and len(status["mint_tx_hash"]) == 66
    assert (await hub_client.http.get(f"/workers/{pubkey}")).json()["mint_tx_hash"] == status["mint_tx_hash"]


async def test_ed5b614_on_registers_when_get_workers_is_404(hub_client: HubClient) -> None:
    pubkey = crypto.KeyPair.generate().pubkey
    assert (await hub_client.http.get(f"/workers/{pubkey}")).status_code == 404
    assert (await hub_client.http.post("/workers", json=backend_registration(pubkey))).is_success
    assert (await hub_client.http.get(f"/workers/{pubkey}")).status_code == 200  # registered: done
    assert (await hub_client.http.get("/workers/not-a-key")).status_code == 422
