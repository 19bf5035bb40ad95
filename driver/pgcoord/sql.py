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
LOCK_IS_CURRENT: LiteralString = (
    "SELECT pgcoord.lock_is_current(p_key => %(key)s, p_token => %(token)s)"
)
LOCK_STATUS: LiteralString = (
    "SELECT key, owner, token, acquired_at, expires_at, expired"
    " FROM pgcoord.lock_status ORDER BY key"
)
# raises 3F000 / 42883 where pgcoord is not installed (callers treat that as "none")
VERSION: LiteralString = "SELECT pgcoord.version()"

# held by `pgcoord migrate` from reading the version until its last release file commits
INSTALL_LOCK: LiteralString = "SELECT pg_advisory_lock(%(key)s)"
INSTALL_UNLOCK: LiteralString = "SELECT pg_advisory_unlock(%(key)s)"

MESSAGE_INGEST: LiteralString = (
    "SELECT * FROM pgcoord.message_ingest("
    "p_provider => %(provider)s, p_provider_message_id => %(provider_message_id)s,"
    " p_conversation_key => %(conversation_key)s, p_body => %(body)s,"
    " p_payload => %(payload)s, p_debounce => %(debounce)s, p_max_wait => %(max_wait)s)"
)
BUFFER_CLAIM: LiteralString = (
    "SELECT * FROM pgcoord.buffer_claim("
    "p_worker => %(worker)s, p_limit => %(limit)s, p_lease => %(lease)s)"
)
BUFFER_COMPLETE: LiteralString = (
    "SELECT pgcoord.buffer_complete("
    "p_conversation_key => %(conversation_key)s, p_claim_token => %(claim_token)s)"
)
BUFFER_FAIL: LiteralString = (
    "SELECT pgcoord.buffer_fail("
    "p_conversation_key => %(conversation_key)s, p_claim_token => %(claim_token)s,"
    " p_error => %(error)s, p_retry_in => %(retry_in)s)"
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
LISTEN_BUFFERS: LiteralString = "LISTEN pgcoord_buffers"
