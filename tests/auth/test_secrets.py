"""Generated client secrets are safe to paste anywhere a person or a script puts them."""

from __future__ import annotations

import re

from app.auth.clients import generate_secret


class TestGenerateSecret:
    def test_secrets_are_url_safe_256_bit_and_never_look_like_an_option(self) -> None:
        secrets = [generate_secret() for _ in range(2000)]
        assert len(set(secrets)) == len(secrets)
        for secret in secrets:
            assert re.fullmatch(r"[A-Za-z0-9_-]{43}", secret)  # 32 bytes, base64url
            assert not secret.startswith("-")  # `--client-secret X` must not read X as an option
