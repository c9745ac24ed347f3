"""Login rate limits: failures counted per account and per client address, in bounded memory."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from slidelabel.server.app import create_app
from slidelabel.services.accounts import ensure_admin
from slidelabel.services.login_limits import LoginLimits
from conftest import ADMIN_PASSWORD

LOGIN = "/api/v1/auth/login"


@pytest.fixture
def limited(settings):
    """An app allowing 3 failures per account from one address, 7 per account from all, and 5
    per address."""
    app = create_app(settings.model_copy(update={
        "login_failures_per_account": 3, "login_failures_per_account_all_addresses": 7,
        "login_failures_per_address": 5}))
    with app.state.database.session(write=True) as session:
        ensure_admin(session, ADMIN_PASSWORD)
    yield app
    app.state.database.dispose()


def attempt(app, password: str, *, username: str = "admin", address: str = "10.0.0.1"):
    with TestClient(app, client=(address, 40000)) as client:
        return client.post(LOGIN, json={"username": username, "password": password})


def test_failing_an_account_from_one_address_locks_that_address_out_of_it_and_a_success_resets_it(limited):
    for _ in range(2):
        assert attempt(limited, "wrong-password").status_code == 401
    assert attempt(limited, ADMIN_PASSWORD).status_code == 200  # resets this address's count
    for _ in range(3):
        assert attempt(limited, "wrong-password").status_code == 401
    locked = attempt(limited, ADMIN_PASSWORD)  # even the right password
    assert locked.status_code == 429
    assert 0 < int(locked.headers["Retry-After"]) <= 300 and "try again" in locked.json()["detail"]


def test_someone_failing_an_account_from_their_address_does_not_lock_its_owner_out(limited):
    for _ in range(4):
        attempt(limited, "wrong-password", address="10.6.6.6")
    assert attempt(limited, ADMIN_PASSWORD, address="10.6.6.6").status_code == 429
    assert attempt(limited, ADMIN_PASSWORD, address="10.0.0.3").status_code == 200


def test_failures_from_many_addresses_lock_the_account_from_all(limited):
    for i in range(7):
        assert attempt(limited, "wrong-password", address=f"10.1.0.{i}").status_code == 401
    assert attempt(limited, ADMIN_PASSWORD, address="10.0.0.3").status_code == 429


def test_an_address_is_locked_after_its_failures_on_any_accounts(limited):
    for i in range(5):
        assert attempt(limited, "wrong-password", username=f"guess-{i}").status_code == 401
    assert attempt(limited, ADMIN_PASSWORD).status_code == 429
    assert attempt(limited, ADMIN_PASSWORD, address="10.0.0.9").status_code == 200


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_expire_after_the_window():
    clock = Clock()
    limits = LoginLimits(max_failures=2, window_s=60, max_keys=100, clock=clock)
    limits.failed("a")
    limits.failed("a")
    assert limits.retry_after("a") == pytest.approx(60)
    clock.now += 45
    assert limits.retry_after("a") == pytest.approx(15)
    clock.now += 16
    assert limits.retry_after("a") is None
    limits.failed("a")
    assert limits.retry_after("a") is None


def test_memory_is_bounded_by_the_most_keys_tracked():
    clock = Clock()
    limits = LoginLimits(max_failures=1, window_s=60, max_keys=10, clock=clock)
    for i in range(1000):
        limits.failed(f"address-{i}")
    assert len(limits) == 10
    assert limits.retry_after("address-999") is not None and limits.retry_after("address-0") is None
