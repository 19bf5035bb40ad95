"""CampaignMessage and RateLimited as the campaign worker defines them, supplied to
`pgcoord` while it does not export them yet, so that `pgcoord.demo.pipeline` imports.
Delete this file once `pgcoord` exports both."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pgcoord


@dataclass(frozen=True, slots=True)
class CampaignMessage:
    message_id: int
    run_id: int
    recipient: str
    payload: dict[str, Any]
    attempt: int
    claim_token: int
    scheduled_at: datetime


class RateLimited(Exception):
    def __init__(self, after: timedelta | float, reason: str = "rate limited") -> None:
        super().__init__(reason)
        self.after = after if isinstance(after, timedelta) else timedelta(seconds=after)


for _name, _standin in (("CampaignMessage", CampaignMessage), ("RateLimited", RateLimited)):
    if not hasattr(pgcoord, _name):
        setattr(pgcoord, _name, _standin)
