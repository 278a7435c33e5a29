"""
The registrar's binding update rules (RFC 3261 §10.3 steps 6-7), as a pure
function every location store shares: given an AOR's stored bindings and a
REGISTER's changes, compute what to delete and write, or refuse.
"""

from __future__ import annotations

from collections.abc import Mapping
from operator import attrgetter

from attrs import frozen

from clicktodial.store.errors import OutOfOrderRegistration, TooManyBindings
from clicktodial.store.values import Binding, BindingChanges


@frozen
class BindingPlan:
    """
    What one REGISTER does to an AOR's stored bindings.

    :ivar delete: keys of stored bindings to delete (removed, or expired and not rewritten).
    :ivar write: bindings to store, by key: new ones and rewritten stored ones (a store tells
        them apart by whether the key is among the stored ones).
    :ivar result: the AOR's unexpired bindings afterwards, by contact URI.
    """

    delete: frozenset[str]
    write: Mapping[str, Binding]
    result: tuple[Binding, ...]


#: (A C-level key: no Python frame per binding sorted.)
_BY_AOR_AND_CONTACT = attrgetter("aor", "contact")


def sort_bindings(bindings: list[Binding]) -> list[Binding]:
    """Bindings in the documented order: by AOR, then contact URI."""
    return sorted(bindings, key=_BY_AOR_AND_CONTACT)


def plan_register(
    aor: str, stored: Mapping[str, Binding], changes: BindingChanges, now: float
) -> BindingPlan:
    """
    Apply a REGISTER's ``changes`` to ``stored`` (an AOR's bindings by key,
    expired ones included) at time ``now``.

    :raises OutOfOrderRegistration: when a binding with the request's
        Call-ID has a CSeq at least as high as the request's (RFC 3261
        §10.3 step 7: "the update MUST be aborted and the request fails").
    :raises TooManyBindings: when the request adds a binding and the AOR would then have
        more than ``changes.max_bindings`` (docs/registrar.md, "Binding trust").
    """
    # Expired bindings no longer exist: they are deleted while we are here
    # and never take part in the Call-ID/CSeq comparison. (A loop, not a comprehension:
    # no Python call of its own, for every REGISTER.)
    live: dict[str, Binding] = {}
    for k, b in stored.items():
        if b.expires_at > now:
            live[k] = b
    delete = set(stored) - set(live)
    after = dict(live)
    write: dict[str, Binding] = {}

    def check_order(binding: Binding) -> None:
        if binding.call_id == changes.call_id and changes.cseq <= binding.cseq:
            raise OutOfOrderRegistration(
                aor, binding.contact, changes.call_id, changes.cseq, binding.cseq
            )

    if changes.wildcard:
        # RFC 3261 §10.3 step 6: each binding is checked as in step 7.
        for binding in live.values():
            check_order(binding)
        delete.update(live)
        return BindingPlan(frozenset(delete), {}, ())

    for contact in changes.contacts:
        key = contact.binding_key()
        # Compare with the binding as stored before this request: a request
        # naming one contact twice is not out of order with itself.
        previous = live.get(key)
        if previous is not None:
            check_order(previous)
        if contact.expires == 0:
            after.pop(key, None)
            write.pop(key, None)
            if key in stored:
                delete.add(key)
            continue
        delete.discard(key)
        binding = Binding(
            aor=aor,
            contact=contact.contact,
            expires_at=float(now + contact.expires),
            call_id=changes.call_id,
            cseq=changes.cseq,
            q=contact.q,
            instance_id=contact.instance_id,
            reg_id=contact.reg_id,
            path=changes.path,
            received=changes.received,
            user_agent=changes.user_agent,
        )
        after[key] = binding
        write[key] = binding
    limit = changes.max_bindings
    if limit is not None and len(after) > limit and not after.keys() <= live.keys():
        # Only a request that adds a binding is refused: refreshes and removals of an AOR
        # left above a lowered limit still work (its extra bindings expire by themselves).
        raise TooManyBindings(aor, len(after), limit)
    return BindingPlan(
        frozenset(delete), write, tuple(sorted(after.values(), key=_BY_AOR_AND_CONTACT))
    )
