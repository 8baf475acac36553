"""Register, sign in, me, and the role checks every blueprint reuses."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import Api


def register(client, **overrides):
    body = {"email": "Jane@Example.com", "password": "long-enough", "full_name": "Jane Doe", **overrides}
    return client.post("/api/v1/auth/register", json=body)


def test_register_login_me(client):
    created = register(client, phone="+7 900 123-45-67")
    assert created.status_code == 201
    user = created.get_json()
    assert user["email"] == "jane@example.com" and user["role"] == "customer"
    assert "password" not in user and "password_hash" not in user

    login = client.post("/api/v1/auth/login", json={"email": "JANE@example.com", "password": "long-enough"})
    assert login.status_code == 200
    token = login.get_json()
    assert token["token_type"] == "Bearer" and token["expires_in"] > 0

    me = Api(client, token["access_token"]).get("/api/v1/auth/me")
    assert me.status_code == 200
    assert {k: me.get_json()[k] for k in ("id", "email", "full_name", "phone", "role")} == {
        "id": user["id"],
        "email": "jane@example.com",
        "full_name": "Jane Doe",
        "phone": "+7 900 123-45-67",
        "role": "customer",
    }


def test_password_is_hashed_with_argon2(app, client):
    from services import users

    register(client)
    stored = users.find_by_email("jane@example.com").password_hash
    assert stored.startswith("$argon2id$") and "long-enough" not in stored


def test_duplicate_email_is_409(client):
    assert register(client).status_code == 201
    again = register(client, email="jane@EXAMPLE.com")
    assert again.status_code == 409
    assert again.content_type == "application/problem+json"


def test_short_password_and_bad_email_are_422_with_field_errors(client):
    response = register(client, password="short", email="not-an-email")
    assert response.status_code == 422
    body = response.get_json()
    assert set(body["errors"]) == {"password", "email"}


def test_wrong_password_and_unknown_email_are_the_same_401(client):
    register(client)
    wrong = client.post("/api/v1/auth/login", json={"email": "jane@example.com", "password": "wrong-password"})
    unknown = client.post("/api/v1/auth/login", json={"email": "nobody@example.com", "password": "long-enough"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.get_json()["detail"] == unknown.get_json()["detail"]


def test_me_needs_a_valid_token(client):
    assert client.get("/api/v1/auth/me").status_code == 401
    bad = client.get("/api/v1/auth/me", headers={"Authorization": "Bearer not.a.token"})
    assert bad.status_code == 401
    assert bad.content_type == "application/problem+json"
    assert bad.headers["WWW-Authenticate"] == "Bearer"


def test_a_verified_token_is_still_refused_once_it_expires(app, customer):
    """The per-process cache of verified tokens must not outlive a token's ``exp``."""
    import time
    from datetime import timedelta

    from flask_jwt_extended import create_access_token

    token = create_access_token(
        identity=customer.user["id"], additional_claims={"role": "customer"}, expires_delta=timedelta(seconds=1)
    )
    short_lived = Api(app.test_client(), token)
    assert short_lived.get("/api/v1/auth/me").status_code == 200  # verified, now remembered
    time.sleep(1.2)
    expired = short_lived.get("/api/v1/auth/me")
    assert expired.status_code == 401 and "expired" in expired.get_json()["detail"]


def test_a_token_verified_by_one_app_is_not_trusted_by_an_app_with_another_key(app, customer):
    from tests.test_errors import _fresh_app

    assert customer.get("/api/v1/auth/me").status_code == 200
    other = _fresh_app(app, JWT_SECRET_KEY="another-key-of-at-least-thirty-two-bytes!")
    assert Api(other.test_client(), customer.token).get("/api/v1/auth/me").status_code == 401


def test_a_forged_role_is_refused_even_for_a_known_subject(app, customer):
    import jwt as pyjwt

    claims = pyjwt.decode(customer.token, options={"verify_signature": False})
    forged = pyjwt.encode({**claims, "role": "admin"}, "not-the-key-but-long-enough-to-be-used", algorithm="HS256")
    assert customer.get("/api/v1/auth/me").status_code == 200
    assert Api(app.test_client(), forged).get("/api/v1/admin/dead-letters").status_code == 401


def test_the_login_limit_is_shared_by_every_worker_through_redis(app, backend):
    """Two apps stand for two gunicorn workers; the real backend keeps counts in Redis."""
    if backend == "embedded":
        pytest.skip("the embedded store (memory://) counts per process")
    from tests.test_errors import _fresh_app

    limit = {"AUTH_RATE_LIMIT": "3 per minute", "RATELIMIT_KEY_PREFIX": f"limit-test-{uuid.uuid4().hex}"}
    workers = [_fresh_app(app, **limit).test_client() for _ in range(2)]
    body = {"email": "nobody@example.com", "password": "whatever-long"}
    statuses = [workers[n % 2].post("/api/v1/auth/login", json=body).status_code for n in range(4)]
    assert statuses == [401, 401, 401, 429]


def test_an_unreachable_limit_store_lets_sign_in_through(app):
    from tests.test_errors import _fresh_app

    unreachable = _fresh_app(app, RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/0", AUTH_RATE_LIMIT="1 per minute")
    client = unreachable.test_client()
    assert register(client).status_code == 201
    login = {"email": "jane@example.com", "password": "long-enough"}
    assert [client.post("/api/v1/auth/login", json=login).status_code for _ in range(2)] == [200, 200]


def test_cli_creates_an_admin(app):
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["users", "create", "--email", "boss@example.com", "--password", "s3cret-pass", "--role", "admin"]
    )
    assert result.exit_code == 0, result.output
    from services import users

    assert users.find_by_email("boss@example.com").role == "admin"


def test_ensure_admin_is_idempotent_and_repairs_role(app):
    from services import users

    app.config.update(CARHUB_ADMIN_EMAIL="root@example.com", CARHUB_ADMIN_PASSWORD="first-password")
    runner = app.test_cli_runner()
    try:
        assert runner.invoke(args=["users", "ensure-admin"]).exit_code == 0
        assert runner.invoke(args=["users", "ensure-admin"]).exit_code == 0
        user = users.find_by_email("root@example.com")
        assert user.role == "admin"
        assert users.authenticate("root@example.com", "first-password").id == user.id
    finally:
        app.config.update(CARHUB_ADMIN_EMAIL="", CARHUB_ADMIN_PASSWORD="")
