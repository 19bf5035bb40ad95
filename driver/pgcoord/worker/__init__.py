"""Workers: one runtime (`runtime.Runtime`: the claim loop, slots, timeouts, heartbeats,
batched completions, wake-ups, signals, outages) and one adapter per kind of work."""

from __future__ import annotations

from ..errors import ClaimLost, FailForGood, HandlerTimeout, RateLimited, Retry
from .buffers import BufferWork, BufferWorker, Handler, PayloadHandler
from .campaigns import CampaignWork, CampaignWorker
from .runtime import STOPPED, Failure, RateBudget, Runtime, Work, complete_in

__all__ = [
    "STOPPED",
    "BufferWork",
    "BufferWorker",
    "CampaignWork",
    "CampaignWorker",
    "ClaimLost",
    "FailForGood",
    "Failure",
    "Handler",
    "HandlerTimeout",
    "PayloadHandler",
    "RateBudget",
    "RateLimited",
    "Retry",
    "Runtime",
    "Work",
    "complete_in",
]
