"""
The SQL schema, as SQLAlchemy Core tables.

This metadata is what the code expects; the Alembic migrations in
``clicktodial/store/migrations`` are what creates it. A test runs Alembic's
autogenerate comparison to prove the two agree: change both together.

Times are POSIX seconds in floating point (``clock.seconds()``), the same in
every database and every process.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    false,
)

# Constraint names are fixed by convention so that migrations can name them
# (SQLite batch mode needs names to drop or alter constraints).
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

users = Table(
    "users",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("display_name", String(200), nullable=False),
    # Argon2id PHC string; NULL: no web login until a password is set.
    Column("password_hash", String(255), nullable=True),
    # RFC 2617 / RFC 8760 HA1s for the configured realm; NULL: no SIP secret.
    Column("ha1_md5", String(32), nullable=True),
    Column("ha1_sha256", String(64), nullable=True),
    Column("is_admin", Boolean, nullable=False, server_default=false()),
    Column("disabled", Boolean, nullable=False, server_default=false()),
    Column("created_at", Float, nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    # SHA-256 (hex) of the token; the token itself is never stored.
    Column("digest", String(64), primary_key=True),
    Column("token_id", String(16), nullable=False, unique=True),
    Column(
        "username",
        String(64),
        ForeignKey("users.username", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("label", String(200), nullable=False),
    Column("created_at", Float, nullable=False),
)

bindings = Table(
    "bindings",
    metadata,
    Column("aor", Text, primary_key=True),
    # ContactChange.binding_key(): the canonical contact URI, or the RFC 5626
    # instance-id and reg-id.
    Column("binding_key", Text, primary_key=True),
    # The Contact URI verbatim, URI headers included.
    Column("contact", Text, nullable=False),
    Column("q", Float, nullable=True),
    Column("expires_at", Float, nullable=False, index=True),
    Column("call_id", Text, nullable=False),
    Column("cseq", BigInteger, nullable=False),
    Column("instance_id", Text, nullable=True),
    Column("reg_id", Integer, nullable=True),
    # Path header values (RFC 3327) as a JSON list of strings.
    Column("path", Text, nullable=False, server_default="[]"),
    Column("received", Text, nullable=True),
    Column("user_agent", Text, nullable=True),
)

calls = Table(
    "calls",
    metadata,
    Column("call_id", String(32), primary_key=True),
    Column("caller", String(255), nullable=False),
    Column("callee", String(255), nullable=False),
    Column("node", String(255), nullable=True),
    Column("state", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("caller_answered_at", Float, nullable=True),
    Column("callee_rung_at", Float, nullable=True),
    Column("callee_answered_at", Float, nullable=True),
    Column("connected_at", Float, nullable=True),
    Column("ended_at", Float, nullable=True),
    Column("end_reason", String(32), nullable=True),
    Column("sip_status", Integer, nullable=True),
    Column("who_hung_up", String(16), nullable=True),
    # Calls to telephone numbers (docs/dialplan.md): E.164, its class, the trunk used, and
    # why the dial plan refused it.
    Column("number", String(16), nullable=True),
    Column("destination_class", String(16), nullable=True),
    Column("trunk", String(64), nullable=True),
    Column("refusal", String(255), nullable=True),
    # A user's call history, newest first, from either side of the call.
    Index(None, "caller", "created_at"),
    Index(None, "callee", "created_at"),
    Index(None, "created_at"),
    # count_active / end_active_calls: WHERE ended_at IS NULL.
    Index(None, "ended_at"),
)

# Outbound calls each user placed each UTC day (docs/dialplan.md, "Daily limit"): counted
# by one atomic upsert that refuses past the limit (IOutboundQuota).
outbound_counts = Table(
    "outbound_counts",
    metadata,
    Column("username", String(255), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("count", Integer, nullable=False),
)

# The daemons sharing this database (clicktodial.cluster.nodes): each updates its row's
# last_seen every [cluster] heartbeat_interval; a row older than dead_after is a dead node,
# whose calls in progress another node ends as lost. Times are the nodes' clock.seconds().
nodes = Table(
    "nodes",
    metadata,
    Column("node", String(255), primary_key=True),
    Column("started_at", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
)

# Call traces (docs/calls.md, "Call traces"): the SIP messages of a call, bounded per call.
# One row per call with its counts (the bounds are checked against them) and the time of
# its newest message (purged after [calls] trace_days); no foreign key to calls: a trace
# may be written while its record's writes are still queued.
call_traces = Table(
    "call_traces",
    metadata,
    Column("call_id", String(32), primary_key=True),
    Column("message_count", Integer, nullable=False),
    Column("byte_count", Integer, nullable=False),
    Column("dropped", Integer, nullable=False),
    # Milliseconds of the daemon's clock (POSIX).
    Column("last_at_ms", BigInteger, nullable=False, index=True),
)

# A call's messages, one row per append (usually one or two a call: few index entries,
# whose keys are random call ids), packed by clicktodial.store.traces.pack_messages.
call_trace_messages = Table(
    "call_trace_messages",
    metadata,
    Column("call_id", String(32), primary_key=True),
    # The index of the chunk's first message in the call's trace.
    Column("first_index", Integer, primary_key=True),
    Column("message_count", Integer, nullable=False),
    # The messages' fields as a JSON line, then their octets (Authorization redacted).
    Column("data", LargeBinary, nullable=False),
)
