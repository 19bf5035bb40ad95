-- Internal. Tell idle campaign workers that run p_run_id has work falling due: NOTIFY
-- pgcoord_campaigns (payload the run id) when p_due_at comes within 5 seconds of p_now,
-- the longest an idle campaign worker sleeps (CampaignWork.max_idle_poll in the
-- driver). A woken worker claims what is due and sleeps until the next due message
-- (campaign_due_in), so a message due within that sleep is sent when it falls due; the
-- sleep itself finds anything due later. Nothing for a NULL p_due_at (nothing queued).
-- Its callers (campaign_enqueue, campaign_set_status) call it only for a running run.
CREATE OR REPLACE FUNCTION pgcoord.campaign_wake(
    p_run_id bigint, p_now timestamptz, p_due_at timestamptz
)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_due_at < p_now + interval '5 seconds' THEN
        PERFORM pg_notify('pgcoord_campaigns', p_run_id::text);
    END IF;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_wake(bigint, timestamptz, timestamptz) IS
'Internal. NOTIFY pgcoord_campaigns (payload p_run_id) when p_due_at is within 5 seconds '
'of p_now, the longest an idle campaign worker sleeps; else nothing.';
