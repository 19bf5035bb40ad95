"""Every SQL statement the driver sends. Each call is one statement, one round trip."""

from __future__ import annotations

from typing import LiteralString

LOCK_ACQUIRE: LiteralString = (
    "SELECT * FROM pgcoord.lock_acquire("
    "p_key => %(key)s, p_owner => %(owner)s, p_ttl => %(ttl)s, p_wait => %(wait)s)"
)
LOCK_RELEASE: LiteralString = "SELECT pgcoord.lock_release(p_key => %(key)s, p_owner => %(owner)s)"
LOCK_EXTEND: LiteralString = (
    "SELECT pgcoord.lock_extend(p_key => %(key)s, p_owner => %(owner)s, p_ttl => %(ttl)s)"
)
# a Lease's heartbeat and release, of its own grant (its token) only: never one made
# since under the same owner, by a nested lock() of the same key and owner, or by
# another process given the same owner name
LEASE_EXTEND: LiteralString = (
    "SELECT pgcoord.lock_extend_token(p_key => %(key)s, p_token => %(token)s, p_ttl => %(ttl)s)"
)
LEASE_RELEASE: LiteralString = (
    "SELECT pgcoord.lock_release_token(p_key => %(key)s, p_token => %(token)s)"
)
LOCK_IS_CURRENT: LiteralString = (
    "SELECT pgcoord.lock_is_current(p_key => %(key)s, p_token => %(token)s)"
)
LOCK_STATUS: LiteralString = (
    "SELECT key, owner, token, acquired_at, expires_at, expired"
    " FROM pgcoord.lock_status ORDER BY key"
)
# raises 3F000 / 42883 where pgcoord is not installed (callers treat that as "none")
VERSION: LiteralString = "SELECT pgcoord.version()"
# which database of which server a connection reaches, through a pooler too: its name and
# the server's start (a worker's LISTEN connection must reach the worker's own database)
DATABASE_IDENTITY: LiteralString = (
    "SELECT pg_catalog.current_database(), pg_catalog.pg_postmaster_start_time()"
)

# who may install and upgrade pgcoord: the owner of its schema (no row without one)
SCHEMA_OWNER: LiteralString = (
    "SELECT pg_catalog.pg_get_userbyid(n.nspowner)::text FROM pg_catalog.pg_namespace AS n"
    " WHERE n.nspname = 'pgcoord'"
)
# whether autovacuum runs, and its naptime (pgcoord status, beside a queue's dead tuples)
AUTOVACUUM: LiteralString = (
    "SELECT current_setting('autovacuum')::boolean, current_setting('autovacuum_naptime')::interval"
)
# who was refused (PermissionDenied): the role, whether it uses pgcoord_client's
# privileges, and whether it is a member of it at all (a NOINHERIT role is, without
# using them)
CURRENT_ROLE: LiteralString = (
    "SELECT current_user::text,"
    " coalesce((SELECT pg_has_role(r.oid, 'USAGE') FROM pg_catalog.pg_roles AS r"
    "  WHERE r.rolname = 'pgcoord_client'), false),"
    " coalesce((SELECT pg_has_role(r.oid, 'MEMBER') FROM pg_catalog.pg_roles AS r"
    "  WHERE r.rolname = 'pgcoord_client'), false)"
)

# held by `pgcoord migrate` from reading the version until its last release file commits
INSTALL_LOCK: LiteralString = "SELECT pg_advisory_lock(%(key)s)"
INSTALL_UNLOCK: LiteralString = "SELECT pg_advisory_unlock(%(key)s)"

MESSAGE_INGEST: LiteralString = (
    "SELECT * FROM pgcoord.message_ingest("
    "p_provider => %(provider)s, p_provider_message_id => %(provider_message_id)s,"
    " p_conversation_key => %(conversation_key)s, p_body => %(body)s,"
    " p_payload => %(payload)s, p_debounce => %(debounce)s, p_max_wait => %(max_wait)s)"
)
# lists of ids arrive as the text of a bigint[] and are cast ::text::bigint[] (arrays.py)
MESSAGE_PAYLOADS: LiteralString = (
    "SELECT * FROM pgcoord.message_payloads(p_message_ids => %(message_ids)s::text::bigint[])"
)
BUFFER_CLAIM: LiteralString = (
    "SELECT * FROM pgcoord.buffer_claim("
    "p_worker => %(worker)s, p_limit => %(limit)s, p_lease => %(lease)s)"
)
# buffer_claim with the payloads of each batch's messages, in the order of message_ids:
# one statement, so the claim and its payloads arrive (or fail) together; message_payloads
# takes 10000 ids at most, so a larger batch asks once per 10000 of its messages
BUFFER_CLAIM_WITH_PAYLOADS: LiteralString = (
    "SELECT c.*, (SELECT coalesce(array_agg(p.payload ORDER BY s.first, p.position), '{}')"
    " FROM generate_series(1, cardinality(c.message_ids), 10000) AS s (first)"
    " CROSS JOIN LATERAL pgcoord.message_payloads("
    "p_message_ids => c.message_ids[s.first:s.first + 9999]) WITH ORDINALITY"
    " AS p (message_id, payload, position)) AS payloads"
    " FROM pgcoord.buffer_claim("
    "p_worker => %(worker)s, p_limit => %(limit)s, p_lease => %(lease)s) AS c"
)
BUFFER_COMPLETE: LiteralString = (
    "SELECT pgcoord.buffer_complete("
    "p_conversation_key => %(conversation_key)s, p_claim_token => %(claim_token)s)"
)
_BUFFER_FAIL_ARGUMENTS: LiteralString = (
    "(p_conversation_key => %(conversation_key)s, p_claim_token => %(claim_token)s,"
    " p_error => %(error)s, p_retry_in => %(retry_in)s)"
)
BUFFER_FAIL: LiteralString = "SELECT pgcoord.buffer_fail" + _BUFFER_FAIL_ARGUMENTS
# the worker's fail: whether the batch was parked as dead (NULL: the claim not current)
BUFFER_FAILED: LiteralString = "SELECT pgcoord.buffer_failed" + _BUFFER_FAIL_ARGUMENTS
BUFFER_FAIL_FOR_GOOD: LiteralString = (
    "SELECT pgcoord.buffer_fail_for_good("
    "p_conversation_key => %(conversation_key)s, p_claim_token => %(claim_token)s,"
    " p_error => %(error)s)"
)
BUFFER_EXTEND: LiteralString = (
    "SELECT pgcoord.buffer_extend("
    "p_conversation_key => %(conversation_key)s, p_claim_token => %(claim_token)s,"
    " p_lease => %(lease)s)"
)
BUFFER_RELEASE: LiteralString = (
    "SELECT pgcoord.buffer_release("
    "p_conversation_key => %(conversation_key)s, p_claim_token => %(claim_token)s)"
)
MESSAGE_PRUNE: LiteralString = (
    "SELECT pgcoord.message_prune(p_older_than => %(older_than)s, p_limit => %(limit)s)"
)
BUFFER_REVIVE: LiteralString = (
    "SELECT pgcoord.buffer_revive(p_conversation_key => %(conversation_key)s)"
)
BUFFER_DUE_IN: LiteralString = "SELECT pgcoord.buffer_due_in()"
BUFFER_STATUS: LiteralString = (
    "SELECT conversation_key, message_count, first_message_at, last_message_at, flush_at,"
    " claimed_by, claimed_until, attempt, dead, last_error"
    " FROM pgcoord.buffer_status ORDER BY dead DESC, first_message_at, conversation_key"
)
# the channel message_ingest notifies when it opens a window due within a second
BUFFER_CHANNEL: LiteralString = "pgcoord_buffers"
# the channel campaign_enqueue notifies (at most once a call) when messages fall due soon
CAMPAIGN_CHANNEL: LiteralString = "pgcoord_campaigns"

CAMPAIGN_CREATE: LiteralString = (
    "SELECT pgcoord.campaign_create(p_name => %(name)s, p_max_retries => %(max_retries)s,"
    " p_retry_backoff => %(retry_backoff)s, p_stale_after => %(stale_after)s)"
)
CAMPAIGN_SET_STATUS: LiteralString = (
    "SELECT pgcoord.campaign_set_status(p_run_id => %(run_id)s, p_status => %(status)s)"
)
CAMPAIGN_ENQUEUE: LiteralString = (
    "SELECT pgcoord.campaign_enqueue(p_run_id => %(run_id)s, p_items => %(items)s)"
)
CAMPAIGN_ENQUEUE_ONCE: LiteralString = (
    "SELECT * FROM pgcoord.campaign_enqueue_once(p_run_id => %(run_id)s, p_key => %(key)s,"
    " p_items => %(items)s)"
)
CAMPAIGN_CLAIM: LiteralString = (
    "SELECT * FROM pgcoord.campaign_claim(p_worker => %(worker)s, p_limit => %(limit)s,"
    " p_lease => %(lease)s, p_run_id => %(run_id)s)"
)
CAMPAIGN_COMPLETE: LiteralString = (
    "SELECT pgcoord.campaign_complete(p_message_id => %(message_id)s,"
    " p_claim_token => %(claim_token)s, p_metrics => %(metrics)s)"
)
# the metrics of many messages travel as one JSON array (one value to encode), which
# pgcoord.campaign_metrics unpacks into the jsonb[] the completions take
_METRICS: LiteralString = " p_metrics => pgcoord.campaign_metrics(%(metrics)s::jsonb))"
CAMPAIGN_COMPLETE_MANY: LiteralString = (
    "SELECT pgcoord.campaign_complete_many(p_message_ids => %(message_ids)s::text::bigint[],"
    " p_claim_tokens => %(claim_tokens)s::text::bigint[]," + _METRICS
)
CAMPAIGN_COMPLETED: LiteralString = (
    "SELECT pgcoord.campaign_completed(p_message_ids => %(message_ids)s::text::bigint[],"
    " p_claim_tokens => %(claim_tokens)s::text::bigint[]," + _METRICS
)
# a worker's hot path in one round trip and one transaction: its successes completed,
# then its next claim, which sees them; rows in claim order, the first column of the
# first row what campaign_completed returned (NULL on the others), the claimed message in
# the rest (NULL when nothing was claimed). One function call, so that the statement
# parsed and planned on every call is a plain one.
CAMPAIGN_COMPLETED_THEN_CLAIM: LiteralString = (
    "SELECT * FROM pgcoord.campaign_completed_then_claim("
    "p_message_ids => %(message_ids)s::text::bigint[],"
    " p_claim_tokens => %(claim_tokens)s::text::bigint[], p_metrics => %(metrics)s::jsonb,"
    " p_worker => %(worker)s, p_limit => %(limit)s, p_lease => %(lease)s,"
    " p_run_id => %(run_id)s)"
)
_FAIL: LiteralString = (
    "pgcoord.campaign_fail(p_message_id => %(message_id)s,"
    " p_claim_token => %(claim_token)s, p_error => %(error)s, p_retry_after => %(retry_after)s)"
)
CAMPAIGN_FAIL: LiteralString = "SELECT * FROM " + _FAIL
# the campaign worker's fail: whether it failed for good, and how long until its retry by
# the server's clock, in one round trip
CAMPAIGN_FAIL_IN: LiteralString = (
    "SELECT f.next_attempt_at IS NULL,"
    " greatest(f.next_attempt_at - clock_timestamp(), interval '0')"
    " FROM " + _FAIL + " AS f"
)
CAMPAIGN_FAIL_FOR_GOOD: LiteralString = (
    "SELECT pgcoord.campaign_fail_for_good(p_message_id => %(message_id)s,"
    " p_claim_token => %(claim_token)s, p_error => %(error)s)"
)
CAMPAIGN_SNOOZE: LiteralString = (
    "SELECT pgcoord.campaign_snooze(p_message_id => %(message_id)s,"
    " p_claim_token => %(claim_token)s, p_delay => %(delay)s)"
)
CAMPAIGN_EXTEND: LiteralString = (
    "SELECT pgcoord.campaign_extend(p_message_id => %(message_id)s,"
    " p_claim_token => %(claim_token)s, p_lease => %(lease)s)"
)
CAMPAIGN_RELEASE: LiteralString = (
    "SELECT pgcoord.campaign_release(p_message_id => %(message_id)s,"
    " p_claim_token => %(claim_token)s)"
)
CAMPAIGN_SKIP_STALE: LiteralString = (
    "SELECT pgcoord.campaign_skip_stale(p_older_than => %(older_than)s)"
)
CAMPAIGN_DUE_IN: LiteralString = "SELECT pgcoord.campaign_due_in(p_run_id => %(run_id)s)"
CAMPAIGN_IDLE: LiteralString = (
    "SELECT due_in, settled FROM pgcoord.campaign_idle(p_run_id => %(run_id)s)"
)
CAMPAIGN_BUSY: LiteralString = "SELECT pgcoord.campaign_busy(p_run_id => %(run_id)s)"
CAMPAIGN_PROGRESS: LiteralString = (
    "SELECT run_id, name, status, pending, processing, sent, failed, skipped, total"
    " FROM pgcoord.campaign_progress ORDER BY run_id"
)
CAMPAIGN_RUN_PROGRESS: LiteralString = (
    "SELECT run_id, name, status, pending, processing, sent, failed, skipped, total"
    " FROM pgcoord.campaign_progress WHERE run_id = %(run_id)s"
)
CAMPAIGN_STATS: LiteralString = (
    "SELECT run_id, sent_last_minute, retries, snoozes, handler_p50_ms, handler_p95_ms"
    " FROM pgcoord.campaign_stats(p_run_id => %(run_id)s)"
)
CAMPAIGN_PRUNE: LiteralString = (
    "SELECT pgcoord.campaign_prune(p_older_than => %(older_than)s, p_limit => %(limit)s)"
)

RATE_ACQUIRE: LiteralString = (
    "SELECT pgcoord.rate_acquire(p_key => %(key)s, p_per_second => %(per_second)s,"
    " p_burst => %(burst)s, p_cost => %(cost)s)"
)
RATE_PAUSE: LiteralString = "SELECT pgcoord.rate_pause(p_key => %(key)s, p_for => %(pause)s)"
RATE_STATUS: LiteralString = (
    "SELECT key, tokens, per_second, burst, paused_until, updated_at"
    " FROM pgcoord.rate_status ORDER BY key"
)
