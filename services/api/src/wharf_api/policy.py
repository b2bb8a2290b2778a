"""Who may do what with a resource's rows: one declaration per resource, for all of its routes
(list, read, change, delete), enforced by the toolkit (wharf_api.resource) on every one of them.

Any signed-in account may create a row, and owns the rows it creates. ``read`` says who may list and
read rows; only the owner may change or delete one. ``admins`` says whether an account with the
admin role may do all of that with every row (True) or is an account like any other (False): every
resource says it, there is no default. Whoever may read a row but not change it is answered 403;
whoever may not read it, 404, as if it did not exist.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from wharf_common.authn import Principal

ALL = "all"  # the cache scope of what every reader sees alike


class Readers(enum.Enum):
    EVERY_ACCOUNT = "every signed-in account"
    OWNER = "only the owner"


def scope(owner: str | None) -> str:
    """The cache scope of the rows a reader sees: every row (``owner`` None) or one owner's."""
    return ALL if owner is None else f"owner:{owner}"


@dataclass(frozen=True)
class Policy:
    read: Readers
    admins: bool

    def _as_admin(self, principal: Principal) -> bool:
        return self.admins and principal.is_admin

    def may_write(self, principal: Principal, owner: str | None) -> bool:
        return self._as_admin(principal) or (owner is not None and owner == principal.subject)

    def writable_owner(self, principal: Principal) -> str | None:
        """None if ``principal`` may change every row, else whose rows it may (its own)."""
        return None if self._as_admin(principal) else principal.subject

    def may_read(self, principal: Principal, owner: str | None) -> bool:
        return self.read is Readers.EVERY_ACCOUNT or self.may_write(principal, owner)

    def visible_owner(self, principal: Principal) -> str | None:
        """None if ``principal`` may list and read every row, else whose rows it may (its own)."""
        return None if self.read is Readers.EVERY_ACCOUNT or self._as_admin(principal) else principal.subject

    def scopes_of(self, owner: str | None) -> list[str]:
        """The cache scopes a row of ``owner`` is listed in: the ones a write to it changes."""
        if self.read is Readers.EVERY_ACCOUNT:
            return [ALL]
        return ([scope(owner)] if owner is not None else []) + ([ALL] if self.admins else [])

    def describe(self) -> str:
        writers = "the owner or an admin" if self.admins else "the owner (an admin no more than any account)"
        if self.read is Readers.EVERY_ACCOUNT:
            return f"Every signed-in account may list and read; only {writers} may change or delete (else 403)."
        return f"Only {writers} may list, read, change or delete (anyone else: 404, as if there were none)."
