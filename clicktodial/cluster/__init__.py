"""
Scale-out: several daemons ("nodes") behind a SIP front (Kamailio) sharing one
PostgreSQL database.  The event bus (L{clicktodial.cluster.bus}) carries call
events and hang-up requests between nodes; L{clicktodial.cluster.calls} makes
every node's call controller show and control every call; node liveness
(L{clicktodial.cluster.nodes}) marks the calls of a dead node as lost.
See docs/scaling.md.
"""
