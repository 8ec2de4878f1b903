"""Whether the gateway should get traffic: the backend can run the models, and no drain has begun."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Readiness:
    backend_ready: bool = False
    draining: bool = False

    @property
    def ready(self) -> bool:
        return self.backend_ready and not self.draining

    @property
    def reason(self) -> str:
        if self.draining:
            return "draining: the gateway is shutting down"
        return "ready" if self.backend_ready else "the backend cannot run the models yet"
