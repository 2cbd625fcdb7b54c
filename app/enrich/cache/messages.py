"""What travels on the invalidation channel: a message id and the digests of the keys written.

Anyone with access to the Redis server can publish on the channel, so a message is read
strictly: anything this code did not write is refused (``parse_message`` returns None), and
the bus ignores it. No identifier travels in clear (``app.enrich.cache.l1.dep_digest``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

import orjson

from app.enrich.cache.l1 import Digest

MESSAGE_ID = re.compile(r"[0-9a-f]{32}")


def new_message(digests: Sequence[Digest]) -> tuple[str, bytes]:
    """A new message's id (what its acknowledgements are filed under) and its bytes."""
    message_id = uuid.uuid4().hex
    return message_id, orjson.dumps({"id": message_id, "deps": [d.hex() for d in digests]})


def parse_message(data: bytes) -> tuple[str, list[Digest]] | None:
    """A message's id and digests; None for anything this code did not publish."""
    try:
        payload = orjson.loads(data)
        message_id, deps = payload["id"], payload["deps"]
        if not isinstance(message_id, str) or not MESSAGE_ID.fullmatch(message_id):
            return None
        if not isinstance(deps, list):
            return None
        return message_id, [bytes.fromhex(dep) for dep in deps]
    except (ValueError, TypeError, KeyError):
        return None
