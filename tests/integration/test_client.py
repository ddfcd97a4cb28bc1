"""The Python SDK against a real hub process: auto-refresh, retries that move money once, errors."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpupool.client import AmountError, Client, ClientError, Tokens, format_amount, parse_amount
from tests.conftest import ADMIN_PASSWORD, free_port
from tests.procs import HubProcess, running_hub

JWT_SECRET = "sdk-test-jwt-secret-0123456789abcdef012345"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    with running_hub(tmp_path_factory.mktemp("sdk-hub"), GPUPOOL_HUB_JWT_SECRET=JWT_SECRET) as proc:
        yield proc


@pytest.fixture(scope="module")
def admin(hub: HubProcess) -> Iterator[Client]:
    with Client(hub.url) as client:
        client.login("admin", ADMIN_PASSWORD)
        yield client


@pytest.fixture
def make_user(admin: Client) -> Callable[..., tuple[str, str]]:
    def make(micro: int = 0) -> tuple[str, str]:
        username, password = f"u{uuid.uuid4().hex[:10]}", f"pw-{uuid.uuid4().hex}"
        admin.create_user(username, password)
        if micro:
            admin.mint(username, micro)
        return username, password

    return make


class LoseResponses(httpx.BaseTransport):
    """Forwards every request to the hub, then drops the first ``drops`` responses to ``path``."""

    def __init__(self, path: str, drops: int = 1) -> None:
        self.inner = httpx.HTTPTransport()
        self.path, self.drops = path, drops
        self.bodies: list[dict[str, object]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path != self.path:
            return response
        self.bodies.append(json.loads(request.content))
        if self.drops > 0:
            self.drops -= 1
            response.read()
            response.close()
            raise httpx.ReadError("connection reset after the request was sent", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def _expired_access_token(user_id: int, username: str, role: str = "user") -> str:
    now = int(time.time())
    claims: dict[str, object] = {"sub": str(user_id), "name": username, "role": role, "typ": "access"}
    claims |= {"iat": now - 7200, "exp": now - 3600, "jti": uuid.uuid4().hex[:16]}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def test_login_me_and_health(hub: HubProcess, make_user: Callable[..., tuple[str, str]]) -> None:
    username, password = make_user()
    seen: list[Tokens] = []
    with Client(hub.url, on_tokens=seen.append) as client:
        tokens = client.login(username, password)
        me = client.me()
        health = client.health()
    assert seen == [tokens] and tokens.expires_in > 0
    assert (me.username, me.role, me.account) == (username, "user", f"user:{username}")
    assert health.status == "ok" and health.features["database"] == "sqlite"


def test_error_envelope_becomes_client_error(hub: HubProcess) -> None:
    with Client(hub.url) as client, pytest.raises(ClientError) as caught:
        client.login("admin", "not-the-password")
    assert caught.value.status == 401 and caught.value.code == "invalid_credentials"
    assert caught.value.message == "invalid username or password"


def test_an_expired_access_token_is_refreshed_once_and_handed_back(
    hub: HubProcess, make_user: Callable[..., tuple[str, str]]
) -> None:
    username, password = make_user(micro=2_000_000)
    with Client(hub.url) as first:
        original = first.login(username, password)
        user_id = first.me().id
    seen: list[Tokens] = []
    expired = _expired_access_token(user_id, username)
    with Client(hub.url, expired, original.refresh_token, on_tokens=seen.append) as client:
        assert client.balance().available_micro == 2_000_000
        assert client.balance().available_micro == 2_000_000  # the new token serves later calls
    assert len(seen) == 1
    assert client.access_token == seen[0].access_token != expired
    assert client.refresh_token == seen[0].refresh_token != original.refresh_token
    with (
        Client(hub.url, refresh_token=original.refresh_token) as replay,
        pytest.raises(ClientError) as caught,
    ):
        replay.refresh()  # the old refresh token was spent by the automatic refresh
    assert caught.value.code == "refresh_token_reused"


def test_an_expired_token_without_a_refresh_token_is_an_error(
    hub: HubProcess, make_user: Callable[..., tuple[str, str]]
) -> None:
    username, _ = make_user()
    with Client(hub.url, _expired_access_token(1, username)) as client, pytest.raises(ClientError) as caught:
        client.balance()
    assert (caught.value.status, caught.value.code) == (401, "token_expired")


def test_a_forged_token_is_not_refreshed(hub: HubProcess, make_user: Callable[..., tuple[str, str]]) -> None:
    username, password = make_user()
    seen: list[Tokens] = []
    with Client(hub.url) as first:
        pair = first.login(username, password)
    forged = Client(hub.url, "not-a-jwt", pair.refresh_token, on_tokens=seen.append)
    with forged as client, pytest.raises(ClientError) as caught:
        client.me()
    assert caught.value.code == "invalid_token" and seen == []


def test_a_retried_transfer_reuses_its_key_and_moves_money_once(
    hub: HubProcess, admin: Client, make_user: Callable[..., tuple[str, str]]
) -> None:
    alice, password = make_user(micro=5_000_000)
    bob, _ = make_user()
    lossy = LoseResponses("/v1/transfers")
    with Client(hub.url, transport=lossy, retry_backoff_s=0) as client:
        client.login(alice, password)
        posted = client.transfer(bob, 1_000_000)
    keys = {body["idempotency_key"] for body in lossy.bodies}
    assert len(lossy.bodies) == 2 and len(keys) == 1
    assert posted.replayed and posted.idempotency_key in keys and posted.amount_micro == 1_000_000
    assert admin.account(alice).available_micro == 4_000_000
    assert admin.account(bob).available_micro == 1_000_000


def test_a_retried_mint_moves_money_once(
    hub: HubProcess, make_user: Callable[..., tuple[str, str]], admin: Client
) -> None:
    bob, _ = make_user()
    lossy = LoseResponses("/v1/admin/mint", drops=2)
    with Client(hub.url, transport=lossy, retry_backoff_s=0) as client:
        client.login("admin", ADMIN_PASSWORD)
        client.mint(bob, 7_000_000)
    assert len(lossy.bodies) == 3 and len({b["idempotency_key"] for b in lossy.bodies}) == 1
    assert admin.account(bob).available_micro == 7_000_000


def test_a_request_that_may_have_applied_is_not_resent_unless_idempotent(
    hub: HubProcess, admin: Client
) -> None:
    lossy = LoseResponses("/v1/users")
    username = f"u{uuid.uuid4().hex[:10]}"
    with Client(hub.url, transport=lossy, retry_backoff_s=0) as client:
        client.login("admin", ADMIN_PASSWORD)
        with pytest.raises(ClientError) as caught:
            client.create_user(username, "a-long-password")
    assert caught.value.status == 0 and "may or may not have been applied" in caught.value.message
    assert len(lossy.bodies) == 1
    assert admin.account(username).available_micro == 0  # it was applied, exactly once


def test_lost_retries_give_up_as_unreachable(
    hub: HubProcess, make_user: Callable[..., tuple[str, str]]
) -> None:
    alice, password = make_user(micro=1_000_000)
    lossy = LoseResponses("/v1/transfers", drops=10)
    with Client(hub.url, transport=lossy, retries=2, retry_backoff_s=0) as client:
        client.login(alice, password)
        with pytest.raises(ClientError) as caught:
            client.transfer("admin", 1)
    assert caught.value.status == 0 and caught.value.code == "unreachable"
    assert len(lossy.bodies) == 3


def test_explicit_key_replays_the_same_transfer(
    hub: HubProcess, make_user: Callable[..., tuple[str, str]]
) -> None:
    alice, password = make_user(micro=1_000_000)
    bob, _ = make_user()
    with Client(hub.url) as client:
        client.login(alice, password)
        first = client.transfer(bob, 400_000, idempotency_key="invoice-17")
        again = client.transfer(bob, 400_000, idempotency_key="invoice-17")
        with pytest.raises(ClientError) as clash:
            client.transfer(bob, 1, idempotency_key="invoice-17")
        page = client.transfers()
        assert client.balance().available_micro == 600_000
    assert (first.id, first.replayed, again.id, again.replayed) == (first.id, False, first.id, True)
    assert first.source == f"user:{alice}" and first.to == f"user:{bob}"
    assert clash.value.status == 409 and clash.value.code == "idempotency_conflict"
    assert [t.id for t in page.transfers].count(first.id) == 1


def test_insufficient_funds_and_forbidden(hub: HubProcess, make_user: Callable[..., tuple[str, str]]) -> None:
    alice, password = make_user(micro=1_000)
    with Client(hub.url) as client:
        client.login(alice, password)
        with pytest.raises(ClientError) as poor:
            client.transfer("admin", 1_001)
        with pytest.raises(ClientError) as denied:
            client.mint(alice, 1)
        with pytest.raises(ClientError) as tb:
            client.trial_balance()
    assert (poor.value.status, poor.value.code) == (402, "insufficient_funds")
    assert (denied.value.status, denied.value.code) == (403, "forbidden")
    assert tb.value.status == 403


def test_admin_views_accounts_and_the_trial_balance(admin: Client) -> None:
    tb = admin.trial_balance()
    assert tb.balanced and tb.total_micro == 0
    with pytest.raises(ClientError) as missing:
        admin.account("user:nobody-here")
    assert missing.value.status == 404


def test_unreachable_hub_is_status_0() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, retry_backoff_s=0) as client, pytest.raises(ClientError) as caught:
        client.health()
    assert caught.value.status == 0 and caught.value.code == "unreachable"
    assert caught.value.message.startswith(f"cannot reach hub at {url}: ")


@pytest.mark.parametrize(
    ("text", "micro"),
    [
        ("1.5", 1_500_000),
        ("1500000u", 1_500_000),
        ("25", 25_000_000),
        ("0.000001", 1),
        (" 2 ", 2_000_000),
        (".5", 500_000),
        ("1u", 1),
        ("007.10", 7_100_000),
    ],
)
def test_parse_amount_reads_tokens_and_micro_units(text: str, micro: int) -> None:
    assert parse_amount(text) == micro


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-1", "positive"),
        ("-0.5", "positive"),
        ("0", "greater than zero"),
        ("0.000000", "greater than zero"),
        ("0u", "greater than zero"),
        ("abc", "not an amount"),
        ("", "not an amount"),
        (".", "not an amount"),
        ("1e3", "not an amount"),
        ("1,5", "not an amount"),
        ("+1", "not an amount"),
        ("1.0000001", "too many decimals"),
        ("1.5u", "micro-units"),
        ("u", "micro-units"),
        ("\u0661", "not an amount"),  # an Arabic-Indic digit: str.isdigit says yes, we say no
        ("9" * 31, "too large"),
    ],
)
def test_parse_amount_rejects_bad_input_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(AmountError, match=message):
        parse_amount(text)


def test_format_amount_is_exact() -> None:
    assert format_amount(1_500_000) == "1.500000"
    assert format_amount(1) == "0.000001"
    assert format_amount(0) == "0.000000"
    assert format_amount(-2_000_001) == "-2.000001"
    assert format_amount(10**18 + 1) == "1000000000000.000001"


@given(st.integers(min_value=1, max_value=10**24))
def test_format_then_parse_round_trips(micro: int) -> None:
    assert parse_amount(format_amount(micro)) == micro
    assert parse_amount(f"{micro}u") == micro
