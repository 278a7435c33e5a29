"""
Scale-out: several daemons ("nodes") behind a SIP front (Kamailio) sharing one
PostgreSQL database.  The event bus (:obj:`clicktodial.cluster.bus`) carries call
events and hang-up requests between nodes; :obj:`clicktodial.cluster.calls` makes
every node's call controller show and control every call; node liveness
(:obj:`clicktodial.cluster.nodes`) marks the calls of a dead node as lost.
See docs/scaling.md.
"""
