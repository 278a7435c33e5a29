"""
Call-control policies: who may call whom, how many calls at once, and which
RFC 3725 flow sets up the media.

A policy is an :class:`ICallPolicy` built by an :class:`ICallPolicyFactory` chosen by name
in ``[calls] policy``.  Two are built in:

* ``flow4`` (the default): RFC 3725 §5 Flow IV.  The caller's 2xx (with its
  offer) is ACKed at once with a held answer, so the caller's phone does not
  give up retransmitting it after 64*T1 while the callee rings; the callee is
  INVITEd without SDP; its 2xx brings an offer that is sent to the caller in
  a re-INVITE; the caller's answer goes to the callee in the ACK.
* ``flow1``: RFC 3725 §4 Flow I.  The caller's offer goes to the callee in the
  INVITE; the callee's answer goes to the caller in the ACK of the caller's
  2xx.  Simple, but the callee must answer before the caller's phone stops
  retransmitting its 2xx (32 s): the RFC calls it not recommended for that.

Third-party policies register an entry point in the group
``clicktodial.call_policies``, as store backends do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, cast

from twisted.logger import Logger
from zope.interface import implementer

from clicktodial.calls.values import CallRefused, CallRequest
from clicktodial.errors import PluginConfigError
from clicktodial.interfaces import (
    IBridge,
    ICallPolicy,
    ICallPolicyFactory,
    IMediaFlow,
)
from clicktodial.plugins import (
    PluginKind,
    PluginLoadError,
    UnknownPlugin,
    load_plugin,
    plugin_names,
)
from clicktodial.sip.sdp import accepts_media

if TYPE_CHECKING:
    from clicktodial.config import CallsConfig

__all__ = [
    "BUILTIN_POLICIES",
    "CALL_POLICIES",
    "ENTRY_POINT_GROUP",
    "CallRefused",
    "CallRequest",
    "FlowI",
    "FlowIV",
    "LimitsPolicy",
    "UnknownPolicy",
    "available_policies",
    "create_policy",
    "load_policy",
]

log = Logger(namespace="clicktodial.calls.policy")

#: The entry point group third-party call policies register in.
ENTRY_POINT_GROUP = "clicktodial.call_policies"


class UnknownPolicy(ValueError):
    """``[calls] policy`` names no policy; the message lists those that exist."""

    def __init__(self, name: str, available: list[str]) -> None:
        super().__init__(
            f"unknown call policy {name!r} (available: {', '.join(available) or 'none'})"
        )
        self.name = name
        self.available = available


# -- media flows (RFC 3725) ----------------------------------------------------


def _bridged_unless_no_media(bridge: IBridge, answer: bytes) -> None:
    # Phones sharing no codec may answer the other's offer with every stream rejected
    # (baresip does) rather than with 488 (linphone does): either way they cannot talk,
    # and the call failed as it would have on a 488.
    if accepts_media(answer):
        bridge.bridged()
    else:
        bridge.bridge_failed(488)


@implementer(IMediaFlow)
class FlowI:
    """
    RFC 3725 §4 Flow I: the caller's offer (its 2xx) to the callee; the
    callee's answer (its 2xx) to the caller in the ACK.
    """

    name = "flow1"

    def caller_answered(self, bridge: IBridge, offer: bytes) -> None:
        """Keep the caller's 2xx unACKed; ring the callee with its offer."""
        bridge.invite_callee(offer)

    def callee_answered(self, bridge: IBridge, sdp: bytes | None) -> None:
        """The callee's answer completes the caller's 2xx: ACK it."""
        if sdp is None:
            bridge.bridge_failed(488)
            return
        bridge.ack_caller(sdp)
        _bridged_unless_no_media(bridge, sdp)


@implementer(IMediaFlow)
class FlowIV:
    """
    RFC 3725 §5 Flow IV: ACK the caller at once with a held answer; INVITE
    the callee without SDP; re-INVITE the caller with the callee's offer; the
    caller's answer goes to the callee in its ACK.
    """

    name = "flow4"

    def caller_answered(self, bridge: IBridge, offer: bytes) -> None:
        """ACK the caller now (its 2xx must not time out), ring the callee."""
        bridge.ack_caller(bridge.held_answer(offer))
        bridge.invite_callee(None)

    def callee_answered(self, bridge: IBridge, sdp: bytes | None) -> None:
        """Re-INVITE the caller with the callee's offer, ACK the callee with the answer."""
        if sdp is None:
            bridge.bridge_failed(488)
            return

        def answered(answer: bytes) -> None:
            bridge.ack_callee(answer)
            _bridged_unless_no_media(bridge, answer)

        bridge.reinvite_caller(sdp, answered)


# -- policies ------------------------------------------------------------------


@implementer(ICallPolicy)
class LimitsPolicy:
    """
    The built-in policies: ``[calls] who_may_call``, ``max_calls_per_user``
    and ``max_calls_total``, with a media flow.
    """

    def __init__(self, name: str, flow: IMediaFlow, settings: CallsConfig) -> None:
        self.name = name
        self.flow = flow
        self.settings = settings

    def authorize(self, request: CallRequest) -> None:
        """Refuse what the settings do not allow (see :meth:`ICallPolicy.authorize`)."""
        settings = self.settings
        caller, callee = request.caller, request.callee
        if caller.username == callee.username:
            raise CallRefused("same-user", f"{caller.username} cannot call themselves")
        who = settings.who_may_call
        if who == "nobody" or (who == "admins" and not caller.is_admin):
            raise CallRefused("forbidden", f"{caller.username} may not place calls")
        limit = settings.max_calls_per_user
        if limit and request.caller_calls >= limit:
            raise CallRefused("caller-limit", f"{caller.username} already has {limit} calls")
        if limit and request.callee_calls >= limit:
            raise CallRefused("callee-limit", f"{callee.username} already has {limit} calls")
        total = settings.max_calls_total
        if total and request.total_calls >= total:
            raise CallRefused("total-limit", f"{total} calls are in progress already")


@implementer(ICallPolicyFactory)
class _BuiltinPolicyFactory:
    def __init__(self, name: str, flow: Callable[[], IMediaFlow]) -> None:
        self.name = name
        self.flow = flow

    def create(self, settings: CallsConfig, options: Mapping[str, str]) -> ICallPolicy:
        for key in sorted(options):
            raise PluginConfigError(
                f"unknown key: the {self.name} policy has no options (its limits are [calls] keys)",
                key=key,
            )
        return LimitsPolicy(self.name, self.flow(), settings)


#: Policies that exist without package metadata; plugins cannot replace them.
BUILTIN_POLICIES: Mapping[str, ICallPolicyFactory] = {
    "flow1": _BuiltinPolicyFactory("flow1", FlowI),
    "flow4": _BuiltinPolicyFactory("flow4", FlowIV),
}

#: ``[calls] policy = NAME``, options from ``[policy:NAME]``.
CALL_POLICIES = PluginKind(
    kind="policy",
    description="call policy",
    group=ENTRY_POINT_GROUP,
    interface=ICallPolicyFactory,
    builtins=BUILTIN_POLICIES,
)


def available_policies() -> list[str]:
    """The names ``[calls] policy`` may take, sorted."""
    return plugin_names(CALL_POLICIES)


def load_policy(name: str) -> ICallPolicyFactory:
    """
    The policy factory called ``name``.

    :raises UnknownPolicy: there is none (the message lists those that exist),
        or the plugin fails to load or provide :class:`ICallPolicyFactory`.
    """
    try:
        return cast(ICallPolicyFactory, load_plugin(CALL_POLICIES, name))
    except UnknownPlugin as e:
        raise UnknownPolicy(name, e.available) from None
    except PluginLoadError as e:
        raise UnknownPolicy(name, available_policies()) from e


def create_policy(settings: CallsConfig, options: Mapping[str, str] | None = None) -> ICallPolicy:
    """
    The policy ``[calls] policy`` names, built from the ``[calls]`` settings and
    its ``[policy:NAME]`` section's ``options``.

    :raises UnknownPolicy: no such policy.
    :raises clicktodial.errors.PluginConfigError: the policy refuses an option.
    """
    return load_policy(settings.policy).create(settings, options or {})
