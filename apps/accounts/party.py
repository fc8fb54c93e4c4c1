"""A party of a message: who it is addressed to or written by, as a kind and an id.

Mobile users and business users have separate id spaces, seq streams, presence records and
socket groups, so an id alone never names a recipient: it goes with its kind, as a Party.
"""

from __future__ import annotations

from dataclasses import dataclass

from apps.accounts.models import MobileUser, PartyKind, User


@dataclass(frozen=True, slots=True, order=True)
class Party:
    """A mobile or business user, by kind and primary key (hashable, cheap to build)."""

    kind: PartyKind
    id: int

    def __post_init__(self) -> None:
        # Plain strings ("mobile", from a task's arguments) become the member; others are refused.
        if type(self.kind) is not PartyKind:
            object.__setattr__(self, "kind", PartyKind(self.kind))

    @classmethod
    def mobile(cls, id: int) -> Party:
        return cls(PartyKind.MOBILE, id)

    @classmethod
    def business(cls, id: int) -> Party:
        return cls(PartyKind.BUSINESS, id)

    @classmethod
    def of(cls, principal: User | MobileUser) -> Party:
        """Return the party of a business user or a mobile user."""
        return cls(principal.party_kind, principal.pk)

    @property
    def is_mobile(self) -> bool:
        return self.kind is PartyKind.MOBILE

    @property
    def group(self) -> str:
        """Return the channel-layer group of the party's open sockets: `mobile.<id>` or `business.<id>`."""
        return f"{self.kind.value}.{self.id}"

    def __str__(self) -> str:
        return self.group
