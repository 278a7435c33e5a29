"""
The dial plan at work: what a user typed or clicked, resolved against the directory and
the plan, refusals recorded in the call history, the daily limit counted in the store.
The web's calls go through it (docs/dialplan.md).
"""

from __future__ import annotations

from datetime import UTC, datetime

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from clicktodial.config import Config
from clicktodial.dialplan.numbers import (
    E164,
    InvalidNumber,
    LocalName,
    NumberingPlan,
    parse_target,
)
from clicktodial.dialplan.plan import DialDecision, DialPlan, DialRefused
from clicktodial.interfaces import ICallRecordStore, IOutboundQuota, IUserStore
from clicktodial.store.values import CallUpdate

__all__ = ["DailyCharge", "Dialler", "utc_day"]

log = Logger(namespace="clicktodial.dialplan")

#: Reads names and sip: addresses when no [dialplan] is set (any number is then refused).
_NO_PLAN = NumberingPlan(country_code="1")

#: The longest callee recorded for a refused text that is no number (an emergency number).
_MAX_RECORDED = 64


def utc_day(when: float) -> str:
    """``YYYY-MM-DD``: the UTC day of POSIX time ``when`` (the daily limit's day)."""
    return datetime.fromtimestamp(when, UTC).date().isoformat()


class DailyCharge:
    """
    One call counted against a user's daily limit on ``day``: :meth:`refund` gives it
    back, once however often it is called (the call never reached a trunk).
    """

    def __init__(self, quota: IOutboundQuota, username: str, day: str) -> None:
        self._quota: IOutboundQuota | None = quota
        self.username = username
        self.day = day

    @property
    def refunded(self) -> bool:
        return self._quota is None

    def refund(self) -> None:
        """Give the count back (the day it was counted on, even past midnight)."""
        quota, self._quota = self._quota, None
        if quota is None:
            return
        log.info(
            "{caller}: a call that reached no trunk is not counted in the daily limit ({day})",
            caller=self.username,
            day=self.day,
        )
        quota.uncount_outbound_call(self.username, self.day).addErrback(
            lambda failure: log.failure(
                "{caller}: the daily count could not be given back",
                failure,
                caller=self.username,
            )
        )


class Dialler:
    """
    Resolves dial targets for users and admits calls to numbers.

    :param plan: ``[dialplan]``, or None: numbers cannot be called.
    :param users: the directory: a name it has is a local call.
    :param records: where refused calls are recorded.
    :param quota: counts the daily limit (``IOutboundQuota`` of the store), or None.
    """

    def __init__(
        self,
        clock: IReactorTime,
        plan: DialPlan | None,
        users: IUserStore,
        records: ICallRecordStore,
        quota: IOutboundQuota | None,
        domain: str,
    ) -> None:
        self.clock = clock
        self.plan = plan
        self.users = users
        self.records = records
        self.quota = quota
        self.domain = domain

    def reload(self, config: Config) -> None:
        """SIGHUP: new calls follow the new ``[dialplan]`` (a revoked class at once)."""
        self.plan = config.dialplan.plan()

    async def resolve(self, username: str, text: str, *, record: bool) -> LocalName | DialDecision:
        """
        What ``text`` calls for ``username``: a directory user (:class:`LocalName`) or a
        number the plan lets them dial (:class:`DialDecision`).

        :param record: record a refusal in the call history (a call was asked for; a
            confirmation page only shows it).
        :raises InvalidNumber: ``text`` is neither (not recorded).
        :raises DialRefused: the plan refuses the number (recorded if ``record``).
        """
        no_plan = DialRefused(
            "no-dial-plan", "calling telephone numbers is not configured ([dialplan])"
        )
        try:
            target = parse_target(
                text, self.plan.numbering if self.plan is not None else _NO_PLAN, self.domain
            )
        except InvalidNumber:
            if self.plan is None:
                raise no_plan from None
            raise
        if isinstance(target, LocalName):
            user = await self.users.get_user(target.name)
            if user is not None and not user.disabled:
                return target
            if not target.name.isdigit():
                raise InvalidNumber(f"no user {target.name}")
        if self.plan is None:
            raise no_plan
        number: E164 | None = target if isinstance(target, E164) else None
        try:
            if number is None:
                number = self.plan.number_of(text)
            return self.plan.decide(username, number)
        except DialRefused as refused:
            if record and refused.reason != "invalid-number":
                await self._record_refusal(username, number, text, refused)
            if refused.reason == "invalid-number":
                raise InvalidNumber(refused.message) from None
            raise

    async def admit(self, username: str, decision: DialDecision) -> DailyCharge | None:
        """
        Count the call against ``username``'s daily limit, before the caller's phone rings
        (one atomic check-and-count in the store: concurrent calls never pass the limit).
        What counts is an attempt that reaches a trunk: :meth:`DailyCharge.refund` gives
        the count back when the call ends without any INVITE sent to a trunk
        (docs/dialplan.md, "The daily limit").

        :return: the call's charge, or None when no limit is set.
        :raises DialRefused: ``daily-limit`` (recorded), or ``no-quota`` when the store
            cannot count while a limit is set.
        """
        plan = self.plan
        if plan is None or plan.daily_limit == 0:
            return None
        if self.quota is None:
            raise DialRefused(
                "no-quota",
                "the store cannot count the daily limit of calls to"
                " numbers: set [dialplan] daily_limit = 0",
            )
        day = utc_day(self.clock.seconds())
        if not await self.quota.count_outbound_call(username, day, plan.daily_limit):
            refused = DialRefused(
                "daily-limit",
                f"{username} has placed the {plan.daily_limit} calls to numbers"
                f" allowed a day ({day}, UTC)",
            )
            await self._record_refusal(
                username, decision.number, str(decision.number), refused, decision.destination_class
            )
            raise refused
        return DailyCharge(self.quota, username, day)

    async def _record_refusal(
        self,
        username: str,
        number: E164 | None,
        text: str,
        refused: DialRefused,
        destination_class: str | None = None,
    ) -> None:
        now = self.clock.seconds()
        callee = str(number) if number is not None else text.strip()[:_MAX_RECORDED]
        if number is not None and destination_class is None and self.plan is not None:
            destination_class = self.plan.classify(number)
        elif refused.reason == "emergency":
            destination_class = "emergency"
        call_id = await self.records.create_call(username, callee, now)
        await self.records.update_call(
            call_id,
            CallUpdate(
                state="refused",
                ended_at=now,
                end_reason="refused",
                who_hung_up="system",
                number=str(number) if number is not None else None,
                destination_class=destination_class,
                refusal=refused.message,
            ),
        )
        log.info(
            "call {record}: {caller} may not call {callee}: {reason}",
            record=call_id,
            caller=username,
            callee=callee,
            reason=refused.message,
        )
