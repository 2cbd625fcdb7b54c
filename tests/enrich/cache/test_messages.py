"""The messages on the invalidation channel: what this code writes, it reads back; anything
else (anyone with access to the Redis server may publish there) is refused."""

from __future__ import annotations

import orjson
import pytest

from app.enrich.cache.l1 import dep_digest
from app.enrich.cache.messages import acknowledged_by_all, new_message, parse_message
from tests.fixtures.callers import sample

MESSAGE_ID = "0123456789abcdef0123456789abcdef"
JUNK = [
    b"not json",
    b"[]",
    b'{"id": 1}',
    b'{"id": "x", "keys": 5}',
    b'{"id": "0123456789ABCDEF0123456789ABCDEF", "deps": []}',  # ids are lower-case hex
    b'{"id": "%s", "deps": "00"}' % MESSAGE_ID.encode(),
    b'{"id": "%s", "deps": ["not hex"]}' % MESSAGE_ID.encode(),
    b'{"id": "%s", "deps": [7]}' % MESSAGE_ID.encode(),
    b'{"id": "%s"}' % MESSAGE_ID.encode(),
    b'{"id": "%s", "deps": [], "lsn": "12"}' % MESSAGE_ID.encode(),
    b'{"id": "%s", "deps": [], "lsn": -1}' % MESSAGE_ID.encode(),
    b'{"id": "%s", "deps": [], "lsn": true}' % MESSAGE_ID.encode(),
]


class TestMessages:
    def test_a_message_written_here_reads_back_as_its_id_and_digests(self) -> None:
        digests = [dep_digest(("email", "jane@example.com")), dep_digest(("crm_id", "C-7"))]
        message_id, data = new_message(digests)
        assert parse_message(data) == (message_id, digests, None)

    def test_a_commit_position_travels_with_the_message(self) -> None:
        digests = [dep_digest(("email", "jane@example.com"))]
        message_id, data = new_message(digests, 123_456_789)
        assert parse_message(data) == (message_id, digests, 123_456_789)

    def test_it_names_no_identifier(self) -> None:
        _, data = new_message([dep_digest(("email", "jane@example.com"))])
        assert b"jane" not in data
        assert b"example.com" not in data
        assert set(orjson.loads(data)) == {"id", "deps"}

    @pytest.mark.parametrize("data", JUNK)
    def test_anything_else_on_the_channel_is_refused(self, data: bytes) -> None:
        assert parse_message(data) is None


class TestAcknowledgedByAll:
    async def test_a_missing_acknowledgement_is_counted(self) -> None:
        before = sample("enrich_invalidations_unacknowledged_total")
        # Past its deadline at once: no Redis call is made, so no client is needed.
        done = await acknowledged_by_all(None, {b"worker-1"}, "acks", within=0)  # type: ignore[arg-type]
        assert done is False
        assert sample("enrich_invalidations_unacknowledged_total") == before + 1
