-- Campaign send queue: runs, their messages, the queue of open work, and outcomes.
--
-- Design. A message is written once and never updated: its recipient and payload sit in
-- campaign_messages (insert-only, fillfactor 100), its end in campaign_outcomes (one
-- insert when it is sent, fails for good or is skipped). What claims and completions
-- change is campaign_queue, which holds only open work, in groups: one row holds up to
-- 15 messages of one run that share their state (scheduled at the same instant, pending
-- or held by one claim, the same number of failed tries). A claim of 15 (the default,
-- or any multiple) rewrites whole rows and inserts none, and a complete_many of them
-- deletes those rows: two dead tuples per 15 messages (0.13 per message) where a
-- row-per-message queue leaves two per message (a claim's UPDATE and a completion's
-- UPDATE or DELETE). Dead tuples are what a long transaction keeps from vacuum, and what
-- every claim walks over in the due index until vacuum may remove them. A group splits
-- when a claim needs fewer than it holds (the claimed part becomes a row of its own; the
-- rest stays pending in place, a HOT update: only message_ids changes, nothing indexed)
-- and when one message leaves a claim (a fail, snooze or release moves it to a group of
-- its own). Groups join when a claim from one run (the one running, or the one it
-- names) takes several whole that agree on tries, snoozes and last error (groups of one,
-- as an enqueue of one message per call makes): they are deleted and one held row
-- inserted, so such a message leaves one dead tuple and its claim of 15 one more, where
-- holding each in place would leave two per message. A sent message leaves the queue,
-- so the queue and its indexes stay the size of the backlog however many messages were
-- sent, and the claim reads a few pages per message however old the run is. A claim, a
-- complete_many, a fail are each one transaction of a few statements; no enqueue, claim
-- or completion writes a shared row.
-- Progress is counted without reading the sent messages: total is summed over the run's
-- rows of campaign_enqueues (one per enqueue call) less what campaign_prune deleted,
-- skipped is a counter kept on the run by skip_stale, pending and processing are summed
-- over the run's queue rows, failed is counted on a partial index, and sent is what
-- remains.
--
-- Claim tokens come from one sequence, one per group and claim, so a newer claim of a
-- message always has a larger token. A group's token is its key: complete, fail, snooze,
-- extend and release find the claim by token and check the message is in it. Messages
-- returned by one claim with the same claim_token share one lease (extending one
-- extends them all). A group is due at due_at: its scheduled (or retry) time while
-- pending, its lease's end while held (an orphan is a held group whose lease has run out).
-- A pending group's scheduled_at is that of each of its messages (skip_stale reads it);
-- a held one's, the earliest of its messages' (a message given back takes its own).

-- One row per run. Its counters change only with a skip_stale (skipped) or a prune
-- (pruned, and skipped), so an enqueue (which only share-locks the row), a claim or a
-- completion never writes here: a counter that every enqueue updated would leave a
-- version of this row per enqueue call, and while a long transaction holds back vacuum
-- every enqueue and claim would walk them all.
CREATE TABLE IF NOT EXISTS pgcoord.campaign_runs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    status text NOT NULL DEFAULT 'running'
    CHECK (status IN ('running', 'paused', 'cancelled', 'finished')),
    max_retries integer NOT NULL,
    retry_backoff interval[] NOT NULL,
    stale_after interval NOT NULL,
    created_at timestamptz NOT NULL,
    status_changed_at timestamptz NOT NULL,
    skipped bigint NOT NULL DEFAULT 0,  -- messages skipped as stale (less those pruned)
    pruned bigint NOT NULL DEFAULT 0  -- messages deleted by campaign_prune
) WITH (fillfactor = 80);

-- the claim's way to the running runs (few, however many runs are kept)
CREATE INDEX IF NOT EXISTS campaign_runs_running
ON pgcoord.campaign_runs (id)
WHERE status = 'running';

-- The messages as enqueued: written once, read by the claims, never updated.
CREATE TABLE IF NOT EXISTS pgcoord.campaign_messages (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id bigint NOT NULL,
    recipient text NOT NULL,
    payload jsonb NOT NULL,
    scheduled_at timestamptz NOT NULL
) WITH (fillfactor = 100);

-- One row per enqueue call that stored messages: how many, and the ids of the first and
-- the last (other messages, of concurrent calls into this run or others, may lie
-- between). Insert-only: a run's total is the sum of its rows (less its pruned counter),
-- and campaign_prune finds its messages between the smallest and the largest id. A run
-- enqueued in batches has a row per batch; one enqueued a message per call, a row per
-- message (an entry of the primary key, read by campaign_progress and campaign_prune
-- only).
CREATE TABLE IF NOT EXISTS pgcoord.campaign_enqueues (
    run_id bigint NOT NULL,
    first_message_id bigint NOT NULL,
    last_message_id bigint NOT NULL,
    messages integer NOT NULL,
    PRIMARY KEY (run_id, first_message_id) INCLUDE (last_message_id, messages)
) WITH (fillfactor = 100);

-- The keys of campaign_enqueue_once: one row per key and run, written in the enqueue's
-- transaction, so a retried call (its first answer lost with the connection) finds the
-- key and enqueues nothing. Insert-only; deleted with the run by campaign_prune.
CREATE TABLE IF NOT EXISTS pgcoord.campaign_enqueue_keys (
    run_id bigint NOT NULL,
    key text NOT NULL,
    messages integer NOT NULL,
    PRIMARY KEY (run_id, key)
) WITH (fillfactor = 100);

-- Open work: groups of up to 15 messages of one run in one state. claimed_by is NULL
-- while the group is pending; due_at is then when it may be claimed, else when its
-- lease ends. tries counts the failed tries of its messages (fails and lost leases),
-- snoozes their snoozes (a snooze moves its message to a group of its own, so the
-- count is per message; nothing but a snooze changes it).
-- fillfactor 85: an enqueue fills pages to 85%, leaving room for the new versions that
-- the first claims on a page write (a claim of a whole group rewrites its row; a split
-- updates the rest in place, HOT); once those are completed, pruning frees their space
-- for the next claims on the page, without waiting for vacuum. Less (50) would double
-- the pages every enqueue takes until vacuum lets inserts reuse freed space (the free
-- space map is filled by vacuum only). Autovacuum runs at a fixed number of dead
-- tuples, whatever the table's size, and without cost delay: the table is small and
-- churns, and each pass returns the space of completed groups to the free space map.
-- The functions that read the queue run with enable_seqscan off (010_locks.sql says why):
-- read through its indexes, a claim costs the same whatever the queue held when the
-- session made its plans.
CREATE TABLE IF NOT EXISTS pgcoord.campaign_queue (
    token bigint PRIMARY KEY,
    run_id bigint NOT NULL,
    due_at timestamptz NOT NULL,
    scheduled_at timestamptz NOT NULL,
    claimed_by text,
    tries integer NOT NULL DEFAULT 0,
    snoozes integer NOT NULL DEFAULT 0,
    last_error text,
    message_ids bigint[] NOT NULL
) WITH (
    fillfactor = 85,
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 5000
);

-- the claim's index: a run's groups, the one due first first
CREATE INDEX IF NOT EXISTS campaign_queue_due
ON pgcoord.campaign_queue (run_id, due_at);

-- the claim's way to orphans (held groups whose lease ran out), ahead of the backlog:
-- a run's held groups, the one whose lease ends first first (as many as are in flight,
-- however long the backlog)
CREATE INDEX IF NOT EXISTS campaign_queue_held
ON pgcoord.campaign_queue (run_id, due_at)
WHERE claimed_by IS NOT NULL;

-- How each message ended: one insert, never updated. attempts counts its tries
-- (for a sent message the last one, that worked, included), snoozes its snoozes;
-- error is the last failure (for a sent message, of a try before the one that worked).
-- Insert-only: the default autovacuum (triggered by inserts) keeps its visibility map
-- set for the index-only count of failures.
CREATE TABLE IF NOT EXISTS pgcoord.campaign_outcomes (
    message_id bigint PRIMARY KEY,
    run_id bigint NOT NULL,
    status text NOT NULL CHECK (status IN ('sent', 'failed', 'skipped')),
    finished_at timestamptz NOT NULL,
    attempts integer NOT NULL,
    snoozes integer NOT NULL DEFAULT 0,
    metrics jsonb,
    error text
) WITH (fillfactor = 100);

-- campaign_progress counts a run's failures here (rare); sent is derived, never counted
CREATE INDEX IF NOT EXISTS campaign_outcomes_failed
ON pgcoord.campaign_outcomes (run_id)
WHERE status = 'failed';

-- campaign_stats: the outcomes of messages that had a failed try or a snooze (rare),
-- where it sums a run's retries and snoozes without reading its other outcomes
CREATE INDEX IF NOT EXISTS campaign_outcomes_eventful
ON pgcoord.campaign_outcomes (run_id) INCLUDE (status, attempts, snoozes)
WHERE attempts > (status = 'sent')::integer OR snoozes > 0;

-- campaign_stats: a run's sent messages by finish time, read backwards for the last
-- minute's count and the last 1000's handler times, however long the run (without it,
-- both read every outcome of the run). Every sent message adds an entry, at its run's
-- end of the index: a server-side loop of claim + complete_many of 15 took 0.30 ms with
-- and without it (8 alternating rounds of 2,000 on PostgreSQL 15: within the noise).
CREATE INDEX IF NOT EXISTS campaign_outcomes_sent
ON pgcoord.campaign_outcomes (run_id, finished_at)
WHERE status = 'sent';

CREATE SEQUENCE IF NOT EXISTS pgcoord.campaign_token AS bigint;
