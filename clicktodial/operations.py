"""
Running the daemon in production: the pieces :func:`install_operations` adds to the service
tree built by :func:`clicktodial.service.build_service`:

- the reload and metrics of :class:`~clicktodial.admission.AdmissionControl` (which
  ``build_service`` puts in front of the transaction layer: ``[limits]`` overload 503s,
  503s while stopping) and of the per-source rate limit the transport applies before
  parsing; :func:`register_metrics`, the SIP stack's REGISTER observer;
- :class:`~clicktodial.shutdown.GracefulStop` (``[daemon] shutdown_grace``), run by
  :class:`clicktodial.tap.DaemonSignals` on SIGTERM;
- ``/metrics`` and ``/readyz`` (:mod:`clicktodial.metrics`);
- reload hooks for what ``SIGHUP`` applies live (``[limits]``, ``[daemon]``, and the call
  controller's ``[calls]`` policy, limits and timers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from zope.interface import implementer

from clicktodial.admission import AdmissionControl
from clicktodial.calls.events import CallInfo
from clicktodial.config import Config
from clicktodial.connlimit import ConnectionLimit
from clicktodial.interfaces import ICallOutcomeListener, ILocationStore, IMediaRelay, IStoreLoad
from clicktodial.metrics import DaemonCollector, DaemonMetrics, MetricsResource, ReadinessResource
from clicktodial.reload import ICallsReload, ReloadHook, ReloadRefused
from clicktodial.shutdown import CallsInProgress, GracefulStop, ua_calls
from clicktodial.sip.message import Request, Response
from clicktodial.sip.stack import RegisterObserver, SIPStack
from clicktodial.store.values import FINAL_STATES

__all__ = [
    "Operations",
    "check_calls_policy",
    "install_operations",
    "register_metrics",
    "store_pending",
]


def store_pending(*stores: object) -> Callable[[], int]:
    """
    How many operations wait for the ``stores`` (the ``[store]`` and the ``[location]``
    backend): the sum of what those providing :class:`IStoreLoad` say; 0 for the others.
    """
    loads = [load for load in (IStoreLoad(store, None) for store in stores) if load is not None]
    if not loads:
        return lambda: 0
    if len(loads) == 1:
        return loads[0].pending
    return lambda: sum(load.pending() for load in loads)


class Operations:
    """
    What :func:`install_operations` built.

    :ivar admission: the :class:`AdmissionControl`.
    :ivar graceful_stop: the :class:`GracefulStop` (``run()`` on SIGTERM).
    :ivar metrics: the :class:`DaemonMetrics` (its ``registry`` is what ``/metrics`` shows).
    """

    def __init__(
        self, admission: AdmissionControl, graceful_stop: GracefulStop, metrics: DaemonMetrics
    ) -> None:
        self.admission = admission
        self.graceful_stop = graceful_stop
        self.metrics = metrics
        self._call_controller: Any = None
        #: whether the call controller applies ``[calls]`` on SIGHUP
        self.reloads_calls = False
        #: the ``section.key`` settings the call controller applies on SIGHUP
        self.live_settings: frozenset[str] = frozenset()
        #: run on SIGHUP before any reload hook (``ConfigReloader`` ``checks``)
        self.reload_checks: list[ReloadHook] = []
        metrics.collector(
            DaemonCollector(
                [],
                [
                    (
                        "clicktodial_calls_active",
                        "Click-to-dial calls in progress, by state.",
                        "state",
                        self._calls_by_state,
                    )
                ],
                counters=[
                    (
                        "clicktodial_call_unexpected_inputs",
                        "Inputs a call got in a phase where its state machine has no"
                        " transition for them (ignored, logged once per call), since start,"
                        " by phase/input: a bug, or a phone doing what it should not.",
                        "phase_input",
                        self._unexpected_inputs,
                    )
                ],
            )
        )

    def use_calls(self, calls: CallsInProgress) -> None:
        """Wait for and end ``calls`` on stop (the call controller's view of calls)."""
        self.graceful_stop.calls = calls

    def use_call_controller(self, controller: Any) -> None:
        """
        Take calls from the click-to-dial ``controller`` (a
        :class:`~clicktodial.calls.controller.CallController`): the graceful stop waits for
        its calls and ends them with ``hang_up_all`` (BYE to both phones); ``/metrics``
        shows calls by state and counts ended calls by outcome (an event listener).
        """
        self.use_calls(
            CallsInProgress(lambda: len(controller.active_calls()), controller.hang_up_all)
        )
        self._call_controller = controller
        controller.subscribe(_CallOutcomes(self.metrics))
        relay = controller.relay  # RelaySettings, or None: [media] relay = off
        if relay is not None:
            self.metrics.collector(_media_relay(IMediaRelay(relay.relay)))

    def _calls_by_state(self) -> dict[str, float]:
        controller = self._call_controller
        return {} if controller is None else _count_states(controller.active_calls())

    def _unexpected_inputs(self) -> dict[str, float]:
        controller = self._call_controller
        return {} if controller is None else dict(controller.unexpected_inputs)

    def reload(self, config: Config) -> None:
        """Apply the live parts of a reloaded configuration: ``[limits]``, ``[daemon]``."""
        self.admission.configure(config.limits, config.registrar.trusted_proxies)
        self.graceful_stop.grace = config.daemon.shutdown_grace


def check_calls_policy(config: Config) -> None:
    """
    SIGHUP check: the new ``[calls]`` policy can be built (a plugin may refuse its settings),
    so that the controller's hook cannot fail after other hooks have applied the rest.
    """
    from clicktodial.calls.policy import create_policy

    try:
        create_policy(config.calls, config.plugins.options("policy", config.calls.policy))
    except Exception as e:
        raise ReloadRefused(
            "calls", "policy", f"cannot build policy {config.calls.policy!r}: {e}"
        ) from None


def _retransmissions(sip: SIPStack) -> DaemonCollector:
    """The transaction layer's retransmission counts, read at scrape time."""
    counts = sip.transactions.counts
    return DaemonCollector(
        [],
        [],
        counters=[
            (
                "clicktodial_sip_retransmissions_sent",
                "SIP messages our transactions sent again, by message: request (Timers A"
                " and E, ACKs re-sent) or response (Timer G, answers to retransmitted"
                " requests, 2xx retransmissions).",
                "message",
                lambda: {"request": counts.requests_sent, "response": counts.responses_sent},
            ),
            (
                "clicktodial_sip_retransmissions_received",
                "Retransmitted SIP messages received and absorbed by our transactions, by"
                " message: request (never passed on again) or response (a final response"
                " after the first).",
                "message",
                lambda: {
                    "request": counts.requests_received,
                    "response": counts.responses_received,
                },
            ),
            (
                "clicktodial_sip_unexpected_inputs",
                "Inputs a state machine of the user-agent core had no transition for"
                " (logged once each, otherwise ignored), by machine, state and input.",
                "transition",
                lambda: dict(sip.user_agent.unexpected_inputs),
            ),
        ],
    )


def _count_states(calls: list[Any]) -> dict[str, float]:
    states: dict[str, float] = {}
    for call in calls:
        states[call.state] = states.get(call.state, 0) + 1
    return states


@implementer(ICallOutcomeListener)
class _CallOutcomes:
    """Counts calls as they end, by outcome: the end reason the store records."""

    def __init__(self, metrics: DaemonMetrics) -> None:
        self.metrics = metrics
        # Each label value's child, looked up once: labels() is half a dozen calls a call.
        self._outcomes: dict[str, Any] = {}
        self._relays: dict[str, Any] = {}

    def call_state_changed(self, info: CallInfo) -> None:
        if info.state in FINAL_STATES:
            outcome = info.end_reason or info.state
            counter = self._outcomes.get(outcome)
            if counter is None:
                counter = self._outcomes[outcome] = self.metrics.calls.labels(outcome)
            counter.inc()
            # None: a call another node lost, rebuilt from its record (counted as off).
            relay = info.media_relay or "off"
            counter = self._relays.get(relay)
            if counter is None:
                counter = self._relays[relay] = self.metrics.calls_media_relay.labels(relay)
            counter.inc()


def _media_relay(relay: IMediaRelay) -> DaemonCollector:
    """The media relay's ng counters and round trips, read at scrape time."""

    def stat(name: str) -> Callable[[], float]:
        return lambda: relay.stats().get(name, 0)

    return DaemonCollector(
        [
            (
                "clicktodial_media_relay_sessions",
                "Calls holding a media relay session now.",
                stat("sessions"),
            ),
            (
                "clicktodial_media_relay_round_trip_seconds_sum",
                "Seconds the media relay took to answer ng commands, summed since start.",
                stat("round_trip_seconds_sum"),
            ),
            (
                "clicktodial_media_relay_round_trip_count",
                "ng commands the media relay answered since start.",
                stat("round_trip_count"),
            ),
        ],
        counters=[
            (
                "clicktodial_media_relay_commands",
                "ng commands sent to the media relay since start, by result: sent (all),"
                " error (an error reply), timeout (no relay answered), retransmission.",
                "result",
                lambda: {
                    "sent": relay.stats().get("commands", 0),
                    "error": relay.stats().get("errors", 0),
                    "timeout": relay.stats().get("timeouts", 0),
                    "retransmission": relay.stats().get("retransmissions", 0),
                },
            )
        ],
    )


def register_metrics(metrics: DaemonMetrics) -> RegisterObserver:
    """The SIP stack's REGISTER observer: counts each answer and its time in ``metrics``."""

    def register_answered(request: Request, response: Response, seconds: float) -> None:
        metrics.register_answered(response.status, "Authorization" in request.headers, seconds)

    return register_answered


def install_operations(
    config: Config,
    clock: IReactorTime,
    sip: SIPStack,
    store: Any,
    web_root: Resource,
    admission: AdmissionControl,
    metrics: DaemonMetrics,
    reload_hooks: list[Callable[[Config], object]] | None = None,
    call_controller: Any = None,
    location: object = None,
    connection_limits: Iterable[ConnectionLimit] = (),
) -> Operations:
    """
    Add ``/metrics`` (of ``metrics``) and ``/readyz`` to ``web_root`` (the operator tree:
    clicktodial.web.resource), the graceful stop (``admission`` refuses new requests while
    it runs), and a reload hook in ``reload_hooks``.

    :param admission: the admission control in front of ``sip``'s transaction layer
        (reconfigured on reload with its per-source rate limit, read by /metrics).
    :param location: the ``[location]`` backend when it is not ``store`` (read by /readyz).
    :param connection_limits: the per-source connection caps of the stream listeners
        (their refusals: ``clicktodial_connections_refused_total{listener}``).
    """
    connection_limits = list(connection_limits)
    rate_limiter = admission.rate_limiter
    graceful = GracefulStop(
        clock, admission, ua_calls(sip.user_agent), config.daemon.shutdown_grace
    )
    operations = Operations(admission, graceful, metrics)
    counts = admission.counts
    metrics.collector(
        DaemonCollector(
            [
                (
                    "clicktodial_sip_transactions_active",
                    "SIP transactions in progress (including finished ones waiting out a"
                    " timer for retransmissions).",
                    lambda: sip.transactions.active_count,
                ),
                (
                    "clicktodial_sip_transactions_working",
                    "SIP transactions doing work (waiting for an answer, retransmitting a"
                    " request): what [limits] max_transactions bounds.",
                    lambda: sip.transactions.working_count,
                ),
                (
                    "clicktodial_sip_dialogs_active",
                    "SIP dialogs (sessions) of the UA core alive now.",
                    lambda: len(sip.user_agent.sessions),
                ),
                (
                    "clicktodial_sip_ua_active",
                    "What the SIP UA core holds: sessions, INVITEs in progress both ways,"
                    " merge-detection entries (0 when idle).",
                    lambda: sip.user_agent.active_count,
                ),
                (
                    "clicktodial_calls_in_progress",
                    "Calls in progress, as the graceful stop counts them.",
                    lambda: graceful.calls.count(),
                ),
                (
                    "clicktodial_sip_parse_errors",
                    "SIP messages the parser rejected since start (a counter).",
                    lambda: sip.transport.parse_errors,
                ),
                (
                    "clicktodial_sip_udp_kernel_drops",
                    "UDP datagrams the kernel dropped at the SIP socket since start (a"
                    " counter): its receive buffer was full, or they came from a source the"
                    " rate limit banned (the kernel filter).",
                    lambda: sip.transport.udp_drops,
                ),
                (
                    "clicktodial_store_pending",
                    "Database operations waiting for a database thread.",
                    admission.store_pending,
                ),
                (
                    "clicktodial_rate_limited_sources",
                    "Source addresses tracked by the per-source rate limit.",
                    lambda: len(rate_limiter),
                ),
            ],
            [
                (
                    "clicktodial_sip_requests_refused",
                    "New SIP requests refused since start (a counter), by reason:"
                    " rate_limited (datagrams, stream messages and connections of banned"
                    " sources, dropped before parsing), overload and draining (503).",
                    "reason",
                    lambda: {
                        "rate_limited": rate_limiter.dropped,
                        "overload": counts.overload,
                        "draining": counts.draining,
                    },
                ),
            ],
            counters=[
                (
                    "clicktodial_connections_refused",
                    "Stream connections closed unread since start because their source"
                    " address already held the most it may ([sip] max_connections_per_source,"
                    " [web] max_connections_per_client), by listener.",
                    "listener",
                    lambda: {limit.listener: limit.refused for limit in connection_limits},
                ),
            ],
        )
    )
    metrics.collector(_retransmissions(sip))
    web_root.putChild(b"metrics", MetricsResource(metrics.registry))
    web_root.putChild(
        b"readyz",
        ReadinessResource(
            clock,
            store,
            metrics,
            draining=lambda: admission.draining,
            locations=ILocationStore(location, None),
        ),
    )
    if reload_hooks is not None:
        reload_hooks.append(operations.reload)
    if call_controller is not None:
        operations.use_call_controller(call_controller)
        # [calls] policy settings (and the [policy:NAME] sections) change live when the
        # controller can take them (ICallsReload); the others are named as needing a
        # restart.
        reloadable = ICallsReload(call_controller, None)
        if reload_hooks is not None and reloadable is not None:
            operations.reload_checks.append(check_calls_policy)
            reload_hooks.append(reloadable.reload)
            operations.reloads_calls = True
            keys: frozenset[str] = reloadable.RELOADED_SETTINGS
            operations.live_settings = frozenset(f"calls.{key}" for key in keys) | {"policy:"}
    return operations
