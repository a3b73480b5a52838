"""Admin routes: a key revoked through the API stops working at once on the server that revoked it,
although that server remembers live keys for ALIGND_AUTH_CACHE_SECONDS."""

from fastapi.testclient import TestClient

from tests.api.helpers import ADMIN_KEY, bearer


def test_a_revoked_key_is_refused_from_the_next_request(client: TestClient) -> None:
    admin = bearer(ADMIN_KEY)
    project = client.post("/v1/admin/projects", json={"name": "revoked-team"}, headers=admin).json()
    created = client.post(f"/v1/admin/projects/{project['id']}/api_keys", json={}, headers=admin).json()
    assert client.get("/v1/files", headers=bearer(created["value"])).status_code == 200  # now cached

    revoked = client.delete(f"/v1/admin/api_keys/{created['id']}", headers=admin)

    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    refused = client.get("/v1/files", headers=bearer(created["value"]))
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
