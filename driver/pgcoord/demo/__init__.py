"""The demo (`pgcoord demo`, `python -m pgcoord.demo`, `scripts/demo`): pgcoord's lease
locks and inbox at work on a real PostgreSQL server, every step checked.

    main          the command line and the run: which scenes, on which server
    server        the given server or an embedded one, pgcoord installed, scratch databases
    locks_scene   scenes 1-4: the webhook race, release, takeover, lock_status
    inbox_scene   the storm: senders, worker processes, one SIGKILLed mid-batch
    plan          the storm's seeded plan: bursts, provider retries
    senders       the provider's webhooks delivering the plan through message_ingest
    storm_worker  the worker process (python -m pgcoord.demo.storm_worker)
    workers       those processes as the demo sees them: start, ready, kill, stop
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

The library never imports this package (tests/test_layering.py).
"""
