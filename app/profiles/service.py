"""Profile rules: identity binding, replace, merge patch, erasure."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import AppError, ConflictError, NotFoundError
from app.core.models import Profile
from app.identity.identifiers import (
    IdentifierError,
    Key,
    email_sha256,
    is_absent,
    normalize_type,
    normalize_value,
    with_derived,
)
from app.profiles import consent
from app.profiles.documents import (
    PreparedProfile,
    differs,
    document_view,
    prepare,
    profile_view,
)
from app.profiles.limits import UnstorableError, check_document
from app.profiles.mergepatch import merge_patch
from app.profiles.repository import ProfileRepository
from app.profiles.schemas import EVENT_METRICS, ProfileDocument

UNKNOWN_MEMBER = "Extra inputs are not permitted"

# A lost race for a new identifier is retried by resolving again; this bounds the retries.
ATTEMPTS = 3


class PatchError(AppError):
    status_code = 422
    code = "validation_error"


@dataclass
class Bound:
    """The profile a set of identifiers resolved to (or created)."""

    profile_id: uuid.UUID
    created: bool
    profile: Profile | None = None
    attached: list[Key] = field(default_factory=list)


@dataclass
class WriteResult:
    view: dict[str, Any]
    created: bool
    touched: set[Key]


def conflict(key: Key) -> ConflictError:
    return ConflictError(f"identifier {key[0]} {key[1]!r} belongs to another profile")


def path_mismatch(path: Key, value: Any) -> IdentifierError:
    return IdentifierError(
        f"the body names {path[0]} {str(value)[:60]!r} but the path names {path[1]!r}: "
        "the path identifier stays with the profile"
    )


class ProfileService:
    def __init__(self, session: AsyncSession, region: str) -> None:
        self.repo = ProfileRepository(session)
        self.region = region

    async def _owner(self, path: Key) -> uuid.UUID:
        owner = (await self.repo.owners([path])).get(path)
        if owner is None:
            raise NotFoundError(f"no profile has identifier {path[0]} {path[1]!r}")
        return owner

    async def view(self, profile_id: uuid.UUID) -> dict[str, Any]:
        profile = await self.repo.get(profile_id)
        if profile is None:
            raise NotFoundError("the profile was erased while this request ran")
        return profile_view(profile, await self.repo.keys_of(profile_id))

    async def get(self, path: Key) -> dict[str, Any]:
        return await self.view(await self._owner(path))

    async def bind(
        self,
        wanted: Sequence[Key],
        *,
        anchor: Key | None = None,
        values: Mapping[str, Any] | None = None,
        load: bool = False,
    ) -> Bound:
        """Resolve ``wanted`` to the one profile owning any of them and attach the rest to it;
        create the profile (with ``values``) when none does.

        Two owners are a 409 naming the identifier (nothing is merged silently). ``anchor``
        is the key the caller addressed; its owner is the profile the others must agree with.
        ``load`` returns the profile locked (FOR UPDATE on PostgreSQL).
        """
        for _ in range(ATTEMPTS):
            owners = await self.repo.owners(wanted)
            owner = owners.get(anchor) if anchor else None
            for key in wanted:
                if key in owners and owner is None:
                    owner = owners[key]
                if key in owners and owners[key] != owner:
                    raise conflict(key)
            missing = [key for key in wanted if key not in owners]
            if owner is None:
                profile = await self.repo.create(dict(values or {}))
                claimed = await self.repo.claim_keys(profile.id, missing)
                if len(claimed) == len(missing):
                    return Bound(profile.id, True, profile, claimed)
                # Another request took one of the keys first: undo and resolve again.
                await self.repo.delete(profile.id)
                continue
            locked: Profile | None = None
            if load or missing:
                locked = await self.repo.get(owner, lock=True)
                if locked is None:  # erased meanwhile
                    continue
            claimed = await self.repo.claim_keys(owner, missing)
            lost = [key for key in missing if key not in set(claimed)]
            if lost:
                now = await self.repo.owners(lost)
                for key in lost:
                    if now.get(key) != owner:
                        raise conflict(key)
            return Bound(owner, False, locked, claimed)
        raise ConflictError("the identifiers changed while this request ran; retry it")

    async def put(self, path: Key, document: ProfileDocument) -> WriteResult:
        """Create or replace the profile ``path`` names (identifiers are only ever added)."""
        self._same_type_as_path(path, document.identifiers)
        prepared = prepare(document, self.region)
        wanted = with_derived([path, *prepared.keys])
        values = {**prepared.content(), **prepared.columns}
        fresh, history = consent.change({}, prepared.consent, prepared.source, "api")
        bound = await self.bind(wanted, anchor=path, values={**values, **fresh}, load=True)
        if not bound.created:
            assert bound.profile is not None
            fresh, history = consent.change(
                bound.profile.consent, prepared.consent, prepared.source, "api"
            )
            if bound.attached or differs(bound.profile, prepared) or fresh:
                await self.repo.update(bound.profile_id, {**values, **fresh})
        await self.repo.add_consent_history(bound.profile_id, history)
        view = await self.view(bound.profile_id)
        return WriteResult(view, bound.created, set(wanted))

    def _same_type_as_path(self, path: Key, identifiers: Mapping[str, Any]) -> None:
        for raw_type, value in identifiers.items():
            if normalize_type(raw_type) != path[0] or is_absent(value):
                continue
            if normalize_value(path[0], value, self.region) != path[1]:
                raise path_mismatch(path, value)

    async def patch(self, path: Key, patch: Any) -> WriteResult:
        """Apply an RFC 7396 merge patch; only the event metrics it names are written."""
        if not isinstance(patch, dict):
            raise PatchError("a merge patch for a profile must be a JSON object")
        try:
            check_document(patch)  # identifiers too; the merged content is checked again
        except UnstorableError as exc:
            raise PatchError(str(exc)) from exc
        owner = await self._owner(path)
        profile = await self.repo.get(owner, lock=True)
        if profile is None:
            raise NotFoundError(f"no profile has identifier {path[0]} {path[1]!r}")
        current = await self.repo.keys_of(owner)
        content_patch = {name: value for name, value in patch.items() if name != "identifiers"}
        _no_removal(content_patch)
        prepared = self._merged(profile, content_patch)
        fresh, history = consent.change(profile.consent, prepared.consent, prepared.source, "api")
        final = current
        if "identifiers" in patch:
            final = self._patched_keys(path, current, patch["identifiers"])
        added = [key for key in final if key not in set(current)]
        removed = [key for key in current if key not in set(final)]
        if added:
            owners = await self.repo.owners(added)
            for key in added:
                if key in owners:
                    raise conflict(key)
            claimed = await self.repo.claim_keys(owner, added)
            for key in added:
                if key not in set(claimed):
                    raise conflict(key)
        if removed:
            await self.repo.release_keys(owner, removed)
        if added or removed or differs(profile, prepared) or fresh:
            await self.repo.update(owner, {**prepared.content(), **prepared.columns, **fresh})
        await self.repo.add_consent_history(owner, history)
        return WriteResult(await self.view(owner), False, {*current, *final})

    def _merged(self, profile: Profile, content_patch: dict[str, Any]) -> PreparedProfile:
        merged = merge_patch(document_view(profile), content_patch)
        # Removing a member no profile has leaves nothing to validate, yet it is a mistake
        # the caller should hear about (the schema forbids it as it forbids setting one).
        errors: list[Any] = [
            {"type": "extra_forbidden", "loc": ("body", name), "msg": UNKNOWN_MEMBER, "input": None}
            for name, value in content_patch.items()
            if value is None and name not in ProfileDocument.model_fields
        ]
        try:
            document = ProfileDocument.model_validate(merged)
        except ValidationError as exc:
            errors += [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        if errors:
            raise RequestValidationError(errors)
        prepared = prepare(document, self.region, keys=False)
        # Column metrics are written only where the patch names them, so a patch of traits
        # never overwrites counts that purchases move concurrently.
        metrics_patch = content_patch.get("metrics", {})
        if "metrics" in content_patch and metrics_patch is None:
            touched: Sequence[str] = EVENT_METRICS
        elif isinstance(metrics_patch, dict):
            touched = [name for name in EVENT_METRICS if name in metrics_patch]
        else:
            touched = EVENT_METRICS
        prepared.columns = {name: prepared.columns.get(name) for name in touched}
        return prepared

    def _patched_keys(self, path: Key, current: list[Key], patch: Any) -> list[Key]:
        """The profile's keys after a merge patch of ``identifiers``: null removes a type,
        a value replaces the type's values; ``email_sha256`` follows ``email``."""
        if not isinstance(patch, dict):
            raise PatchError("identifiers must be an object of type -> value (null removes one)")
        changed: set[str] = set()
        added: list[Key] = []
        for raw_type, value in patch.items():
            id_type = normalize_type(raw_type)
            if value is not None and is_absent(value):
                continue
            changed.add(id_type)
            if value is not None:
                normalized = normalize_value(id_type, value, self.region)
                if id_type == path[0] and normalized != path[1]:
                    raise path_mismatch(path, value)
                added.append((id_type, normalized))
        dropped_hashes = (
            {email_sha256(v) for t, v in current if t == "email"} if "email" in changed else set()
        )
        kept = [
            (t, v)
            for t, v in current
            if t not in changed and not (t == "email_sha256" and v in dropped_hashes)
        ]
        final = with_derived([*kept, *added])
        if not final:
            raise ConflictError("a profile keeps at least one identifier; DELETE it instead")
        return final

    async def delete(self, path: Key) -> set[Key]:
        """Erase the profile, its identifiers and events; the event ledger stays."""
        owner = await self._owner(path)
        keys = await self.repo.keys_of(owner)
        await self.repo.delete(owner)
        return set(keys)


def _no_removal(content_patch: Mapping[str, Any]) -> None:
    """A merge patch may not remove consent: a withdrawal is a ``denied`` decision."""
    if "consent" not in content_patch:
        return
    decisions = content_patch["consent"]
    if decisions is None or (isinstance(decisions, dict) and None in decisions.values()):
        raise PatchError(
            "consent decisions are not removed: to withdraw consent, write "
            '{"consent": {"<purpose>": {"status": "denied"}}}'
        )
