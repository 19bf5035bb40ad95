"""The demo (`pgcoord demo`, `python -m pgcoord.demo`, `scripts/demo`): pgcoord's lease
locks, inbox and campaign send queue at work on a real PostgreSQL server, every step
checked.

    main          the command line and the run: which scenes, on which server
    server        the given server or an embedded one, pgcoord installed, scratch databases
    locks_scene   scenes 1-4: the webhook race, release, takeover, lock_status
    inbox_scene   the storm: senders, worker processes, one SIGKILLed mid-batch
    campaign_scene  the campaign: the fake provider, worker processes sending through it
                  under one rate budget, one SIGKILLed mid-batch, the throughput
    plan          the storm's seeded plan: bursts, provider retries
    senders       the provider's webhooks delivering the plan through message_ingest
    storm_worker  the storm's worker process (python -m pgcoord.demo.storm_worker)
    campaign_worker  the campaign's (python -m pgcoord.demo.campaign_worker)
    process       what both do around their worker: options, ready, parent watch
    workers       those processes as the demo sees them: start, ready, kill, stop
    scratch       a scene's scratch database, its ledger schema, its workers' logs
    ledger        what the worker processes record, and how it is read back
    facts         what happened, from the ledger and the deliveries (analyse)
    checks        one function per invariant, each returning a Check
    output        printing, ascii mode, the summary
    waiting       polling, and the error of a wait that failed
    pipeline      the campaign handler: generate, split, send each part once (needs the
                  `demo` extra: httpx)
    parts         from a model's answer to WhatsApp parts, and the parts' keys
    provider      a fake model and gateway on 127.0.0.1: slow, failing, rate limited,
                  seeded, with a ledger of what it took (needs aiohttp)

The torture (`pgcoord torture`, `python -m pgcoord.demo.torture`) runs the same pieces
at once under faults:

    torture          the command line and the run: start, strike, drain, judge
    torture_faults   the seeded schedule, the faults, the recovery after each
    torture_crew     its processes by role (buffer workers, lock contenders, campaign
                     workers) and the ledger they write
    torture_lockers  the lock contender process and its fenced writes
    torture_campaign its campaign: messages falling due all along, the fake provider
    torture_server   an embedded server it may crash and start again

The library never imports this package (tests/test_layering.py).
"""
