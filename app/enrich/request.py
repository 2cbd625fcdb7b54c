"""Reading an enrich request: identifiers and fields into lookup keys and a ``Selection``.

One reader for both doors: the FastAPI route (``app/enrich/router.py``, which validates a POST
body against ``EnrichRequest`` first) and the fast path (``app/enrich/fastpath.py``, which
takes a body only when that validation would take it unchanged, and otherwise lets the route
answer). Also here: whether the caller accepts gzip.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import orjson

from app.core.errors import AppError
from app.enrich.fields import EVERYTHING, FieldsError, Selection, parse_fields
from app.enrich.schemas import MAX_IDENTIFIERS
from app.enrich.views.definition import ViewRef, parse_ref
from app.identity.identifiers import Key, lookup_keys
from app.platform.sizes import DICT_SLOT_BYTES, footprint

# What a request asks for: the keys to try, in order, what the answer carries, and the view
# it names (resolved per request: which version a name means changes, the request does not).
Wanted = tuple[tuple[Key, ...], Selection, ViewRef | None]
# The identifiers (type -> value, in the caller's order), the raw `fields` and `view`.
Asked = tuple[dict[str, Any], Any, Any]

REQUEST_MEMBERS = frozenset(("identifiers", "fields", "view"))


def keys_and_selection(
    identifiers: Mapping[str, Any], fields: Any, region: str
) -> tuple[tuple[Key, ...], Selection]:
    """The keys and selection of a request; raises the 4xx errors (``fields`` is read first,
    so a request wrong in both is refused for its fields, as it always was)."""
    selection = parse_fields(fields)
    return tuple(lookup_keys(identifiers, region)), selection


def wanted(identifiers: Mapping[str, Any], fields: Any, view: Any, region: str) -> Wanted:
    """``keys_and_selection`` and the view named (``view`` and ``fields`` together: a 422)."""
    keys, selection = keys_and_selection(identifiers, fields, region)
    ref = parse_ref(view)
    if ref is not None and selection is not EVERYTHING:
        raise FieldsError("give view or fields, not both", code="view_and_fields")
    return keys, selection, ref


def query_items(query_string: bytes) -> list[tuple[str, str]]:
    """The query's name-value pairs. Bytes that are not UTF-8 are kept as lone surrogates
    (rather than replaced by U+FFFD, which would look a made-up identifier up), so that
    ``lookup_keys`` refuses them as a 400."""
    return parse_qsl(
        query_string.decode("latin-1"), keep_blank_values=True, errors="surrogateescape"
    )


def from_query(query_string: bytes) -> Asked:
    """A GET's identifiers (every parameter but ``fields`` and ``view``, the first of each
    name), ``fields`` (repeated parameters joined: one string, one limit) and ``view`` (the
    first); at most ``MAX_IDENTIFIERS`` identifiers, else a 422."""
    identifiers: dict[str, str] = {}
    fields: list[str] = []
    view: str | None = None
    for name, value in query_items(query_string):
        lowered = name.strip().lower()
        if lowered == "fields":
            fields.append(value)
        elif lowered == "view":
            view = value if view is None else view
        else:
            identifiers.setdefault(name, value)
    if len(identifiers) > MAX_IDENTIFIERS:
        raise FieldsError(f"at most {MAX_IDENTIFIERS} identifiers", code="validation_error")
    return identifiers, ",".join(fields) if fields else None, view


def from_json(body: bytes, content_type: bytes) -> Asked | None:
    """A POST's identifiers and fields, when ``EnrichRequest`` would take the body as it is;
    None for anything else (the route then validates it and answers the error)."""
    if not content_type.split(b";")[0].strip().lower() == b"application/json":
        return None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict) or not document.keys() <= REQUEST_MEMBERS:
        return None
    identifiers = document.get("identifiers")
    fields = document.get("fields")
    view = document.get("view")
    if not isinstance(identifiers, dict) or len(identifiers) > MAX_IDENTIFIERS:
        return None
    if not (view is None or isinstance(view, str)):
        return None
    if not (
        fields is None
        or isinstance(fields, str)
        or (isinstance(fields, list) and all(isinstance(f, str) for f in fields))
    ):
        return None
    return identifiers, fields, view


def _read(method: str, payload: bytes, content_type: bytes, region: str) -> Wanted | None:
    """What a request wants, or None for the route to answer it."""
    try:
        asked = from_json(payload, content_type) if method == "POST" else from_query(payload)
        if asked is None:
            return None
        return wanted(asked[0], asked[1], asked[2], region)
    except (AppError, ValueError):
        return None


# The parsed form of a request is remembered only for a body (or query string) of at most
# this many bytes: Personalize's are 100-400. A larger one, or one padded to look new, is
# parsed every time instead of growing the table.
PARSED_KEY_MAX_BYTES = 1024
# What the remembered requests may hold in all, each counted as its bytes plus its parsed form
# (cleared when full). A typical entry is ~2 KB, so this holds ~8,000 distinct requests.
PARSED_MAX_BYTES = 16 * 1_048_576


class RememberedRequests:
    """What well-formed requests want, by their bytes (bounded in bytes).

    Reading a request is a pure function of its bytes: remembering it lets a repeated request
    (Personalize asks for the same guests all day) skip parsing entirely.
    """

    def __init__(self) -> None:
        self.bodies: dict[bytes, Wanted] = {}  # POST
        self.queries: dict[bytes, Wanted] = {}  # GET
        self.bytes = 0

    def get(self, method: str, payload: bytes, content_type: bytes, region: str) -> Wanted | None:
        """What the request wants; None when it is not well-formed (or not as the fast path
        takes it). ``payload``: a POST's body, a GET's query string; ``region``: the default
        phone region (one per process, so not part of what is remembered)."""
        known = self.bodies if method == "POST" else self.queries
        found = known.get(payload)
        if found is None:
            found = _read(method, payload, content_type, region)
            if found is not None and len(payload) <= PARSED_KEY_MAX_BYTES:
                self._remember(known, payload, found)
        return found

    def _remember(self, known: dict[bytes, Wanted], payload: bytes, found: Wanted) -> None:
        size = footprint(payload) + footprint(found) + DICT_SLOT_BYTES
        if self.bytes + size > PARSED_MAX_BYTES:
            self.bodies.clear()
            self.queries.clear()
            self.bytes = 0
        known[payload] = found
        self.bytes += size


def accepts_gzip(header: str) -> bool:
    """Whether Accept-Encoding allows gzip (``q=0`` refuses it)."""
    for item in header.lower().split(","):
        coding, _, params = item.partition(";")
        if coding.strip() not in ("gzip", "*"):
            continue
        quality = params.strip()
        if quality.startswith("q="):
            try:
                return float(quality[2:]) > 0
            except ValueError:
                return False
        return True
    return False


# Accept-Encoding values already judged (bounded: cleared when full); only short ones (real
# browsers and HTTP clients send under 100 bytes), so the table stays under 256 KB.
ACCEPT_ENCODINGS_MAX = 1000
ACCEPT_ENCODING_MAX_BYTES = 256
_GZIP_ACCEPTED: dict[bytes, bool] = {}


def wants_gzip(accept_encoding: bytes) -> bool:
    """``accepts_gzip``, remembered per header value (callers send the same one every time)."""
    accepted = _GZIP_ACCEPTED.get(accept_encoding)
    if accepted is None:
        accepted = accepts_gzip(accept_encoding.decode("latin-1"))
        if len(accept_encoding) <= ACCEPT_ENCODING_MAX_BYTES:
            if len(_GZIP_ACCEPTED) >= ACCEPT_ENCODINGS_MAX:
                _GZIP_ACCEPTED.clear()
            _GZIP_ACCEPTED[accept_encoding] = accepted
    return accepted
