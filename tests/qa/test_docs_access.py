"""Who may read /docs, /redoc and /openapi.json (ENRICH_DOCS), and the headers the pages carry."""

from __future__ import annotations

import base64
import hashlib
import re

import httpx
import pytest

from app.core.settings import Settings
from tests.conftest import AppFactory, ClientMaker, RunningApp
from tests.fixtures.callers import fetch_token

PAGES = ("/docs", "/redoc", "/docs/oauth2-redirect")
DOCUMENTS = (*PAGES, "/openapi.json")


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def policy(response: httpx.Response) -> dict[str, list[str]]:
    """The Content-Security-Policy header as directive -> sources."""
    directives: dict[str, list[str]] = {}
    for part in response.headers["content-security-policy"].split(";"):
        name, *sources = part.split()
        directives[name] = sources
    return directives


def inline_hash(code: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(code.encode()).digest()).decode() + "'"


class TestDocsSetting:
    def test_production_defaults_to_off_and_the_rest_to_public(self) -> None:
        def docs(environment: str) -> str:
            return Settings(_env_file=None, environment=environment).docs_access  # type: ignore[call-arg]

        assert docs("production") == "off"
        assert docs("development") == "public"
        assert docs("test") == "public"
        assert Settings(_env_file=None, environment="production", docs="admin").docs_access == (  # type: ignore[call-arg]
            "admin"
        )


class TestDocsPages:
    async def test_each_page_forbids_framing_sniffing_and_scripts_from_elsewhere(
        self, running: RunningApp
    ) -> None:
        for path in PAGES:
            page = await running.http.get(path)
            assert page.status_code == 200, path
            assert page.headers["x-frame-options"] == "DENY", path
            assert page.headers["x-content-type-options"] == "nosniff", path
            csp = policy(page)
            assert csp["frame-ancestors"] == ["'none'"], path
            assert csp["default-src"] == ["'none'"], path
            assert csp["object-src"] == ["'none'"], path
            assert csp["base-uri"] == ["'none'"], path
            scripts = csp["script-src"]
            assert "'unsafe-inline'" not in scripts, path
            assert "'unsafe-eval'" not in scripts, path
            # Every inline script of the page is allowed by its hash, and nothing else inline.
            inline = re.findall(r"<script>(.*?)</script>", page.text, re.S)
            for code in inline:
                assert inline_hash(code) in scripts, path
            assert len([s for s in scripts if s.startswith("'sha256-")]) == len(inline), path
        document = await running.http.get("/openapi.json")
        assert document.headers["x-content-type-options"] == "nosniff"
        asset = await running.http.get("/docs/assets/swagger-ui-bundle.js")
        assert asset.status_code == 200
        assert asset.headers["x-content-type-options"] == "nosniff"

    async def test_the_pages_answer_head_like_get(self, running: RunningApp) -> None:
        for path in DOCUMENTS:
            got = await running.http.get(path)
            head = await running.http.head(path)
            assert head.status_code == 200, path
            assert head.headers["content-type"] == got.headers["content-type"], path


class TestDocsOff:
    async def test_off_answers_404_on_every_docs_path(self, app_factory: AppFactory) -> None:
        app = await app_factory(docs="off")
        for path in (*DOCUMENTS, "/docs/assets/swagger-ui-bundle.js"):
            answer = await app.http.get(path)
            assert answer.status_code == 404, path
            assert answer.json()["error"] == "not_found", path
        # The API itself is unaffected.
        assert (await app.http.get("/healthz")).status_code == 200

    async def test_production_serves_no_docs_by_default(self, app_factory: AppFactory) -> None:
        app = await app_factory(environment="production")
        for path in DOCUMENTS:
            assert (await app.http.get(path)).status_code == 404, path


class TestDocsForAdmins:
    @pytest.fixture
    async def admin_app(self, app_factory: AppFactory) -> RunningApp:
        return await app_factory(docs="admin")

    @pytest.fixture
    def make_admin_client(self, admin_app: RunningApp) -> ClientMaker:
        from app.auth.clients import ClientService
        from tests.conftest import OAuthClient

        async def maker(scopes: str = "admin") -> OAuthClient:
            async with admin_app.runtime.sessionmaker() as session:
                client, secret = await ClientService(session).create("ops", scopes)
                await session.commit()
            return OAuthClient(client.client_id, secret, sorted(client.scope_set))

        return maker

    async def test_without_credentials_the_browser_is_asked_for_them(
        self, admin_app: RunningApp
    ) -> None:
        for path in DOCUMENTS:
            answer = await admin_app.http.get(path)
            assert answer.status_code == 401, path
            assert answer.headers["www-authenticate"].startswith("Basic realm="), path
            assert answer.json()["error"] == "unauthorized", path
        # The assets are the Swagger UI and ReDoc libraries, nothing of this service.
        asset = await admin_app.http.get("/docs/assets/swagger-ui-bundle.js")
        assert asset.status_code == 200

    async def test_an_admin_client_reads_them_with_its_id_and_secret(
        self, admin_app: RunningApp, make_admin_client: ClientMaker
    ) -> None:
        ops = await make_admin_client("admin")
        for path in DOCUMENTS:
            answer = await admin_app.http.get(path, headers=basic(ops.client_id, ops.client_secret))
            assert answer.status_code == 200, path
        spec = await admin_app.http.get(
            "/openapi.json", headers=basic(ops.client_id, ops.client_secret)
        )
        assert "/v1/enrich" in spec.json()["paths"]

    async def test_an_admin_token_reads_the_document(
        self, admin_app: RunningApp, make_admin_client: ClientMaker
    ) -> None:
        ops = await make_admin_client("admin")
        token = await fetch_token(admin_app.http, ops)
        spec = await admin_app.http.get(
            "/openapi.json", headers={"Authorization": f"Bearer {token}"}
        )
        assert spec.status_code == 200
        assert "/v1/enrich" in spec.json()["paths"]

    async def test_a_client_without_admin_or_a_wrong_secret_is_refused(
        self, admin_app: RunningApp, make_admin_client: ClientMaker
    ) -> None:
        reader = await make_admin_client("profiles:read")
        refused = await admin_app.http.get(
            "/docs", headers=basic(reader.client_id, reader.client_secret)
        )
        assert refused.status_code == 403
        assert refused.json()["error"] == "insufficient_scope"
        token = await fetch_token(admin_app.http, reader)
        by_token = await admin_app.http.get(
            "/openapi.json", headers={"Authorization": f"Bearer {token}"}
        )
        assert by_token.status_code == 403
        ops = await make_admin_client("admin")
        wrong = await admin_app.http.get("/docs", headers=basic(ops.client_id, "not-the-secret"))
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"].startswith("Basic realm=")
        assert "not-the-secret" not in wrong.text
