"""
An example call-control policy plugin: ``[calls] policy = vip``.

Users whose name starts with ``vip-`` may only be called by administrators; everything else
is decided by the built-in limits (``[calls] who_may_call``, ``max_calls_per_user``,
``max_calls_total``), and calls use RFC 3725 Flow IV like the default policy.
"""

from __future__ import annotations

from collections.abc import Mapping

from zope.interface import implementer

from clicktodial.calls.policy import CallRefused, CallRequest, FlowIV, LimitsPolicy
from clicktodial.config import CallsConfig
from clicktodial.errors import PluginConfigError
from clicktodial.interfaces import ICallPolicy, ICallPolicyFactory

__all__ = ["VipPolicy", "factory"]


@implementer(ICallPolicy)
class VipPolicy:
    """Only administrators call ``vip-`` users; the built-in limits for the rest."""

    name = "vip"

    def __init__(self, settings: CallsConfig) -> None:
        self._limits = LimitsPolicy(self.name, FlowIV(), settings)
        self.flow = self._limits.flow

    def authorize(self, request: CallRequest) -> None:
        """Refuse a call to a ``vip-`` user from a non-administrator, then the limits."""
        if request.callee.username.startswith("vip-") and not request.caller.is_admin:
            raise CallRefused(
                "forbidden", f"only administrators may call {request.callee.username}"
            )
        self._limits.authorize(request)


@implementer(ICallPolicyFactory)
class _Factory:
    """``[policy:vip]`` has no options: any key is refused, naming it."""

    def create(self, settings: CallsConfig, options: Mapping[str, str]) -> ICallPolicy:
        for key in sorted(options):
            raise PluginConfigError("unknown key (the vip policy has no options)", key=key)
        return VipPolicy(settings)


#: What the entry point names.
factory = _Factory()
