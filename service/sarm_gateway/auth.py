"""Optional bearer-token auth, shared by the gRPC and HTTP front ends.

Each client role has its own token (SARM_AUTH_TOKENS, JSON role → token) and may call only its role's
operations, so a leaked controller token cannot start dataset jobs. With no tokens configured, auth is off.
Health, liveness, readiness and metrics are never behind auth: load balancers and Prometheus carry no token.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from enum import StrEnum

from sarm_gateway.errors import PermissionDenied, Unauthenticated


class Operation(StrEnum):
    SCORE = "score"  # ScoreWindow, ScoreFrames
    STREAM = "stream"  # StreamEpisode
    INFO = "info"  # GetModelInfo, GET /v1/model
    VIDEO = "video"  # POST /v1/videos:score
    RABC = "rabc"  # RA-BC jobs over datasets


ROLE_OPERATIONS: dict[str, frozenset[Operation]] = {
    "controller": frozenset({Operation.SCORE, Operation.STREAM, Operation.INFO}),  # robots in a control loop
    "evaluator": frozenset({Operation.SCORE, Operation.VIDEO, Operation.INFO}),  # scoring recorded episodes
    "trainer": frozenset({Operation.SCORE, Operation.RABC, Operation.INFO}),  # RA-BC weights for training
    "admin": frozenset(Operation),
}


def check_tokens(tokens: Mapping[str, str]) -> None:
    """Raise ValueError unless every role is known and every token is non-empty and used by one role only."""
    unknown = sorted(set(tokens) - set(ROLE_OPERATIONS))
    if unknown:
        raise ValueError(f"unknown role(s) {unknown} in SARM_AUTH_TOKENS; roles are {sorted(ROLE_OPERATIONS)}")
    empty = sorted(role for role, token in tokens.items() if not token.strip())
    if empty:
        raise ValueError(f"empty token for role(s) {empty} in SARM_AUTH_TOKENS")
    if len(set(tokens.values())) != len(tokens):
        raise ValueError("two roles share a token in SARM_AUTH_TOKENS: give each role its own")


class Authenticator:
    def __init__(self, tokens: Mapping[str, str]) -> None:
        check_tokens(tokens)
        self._tokens = {role: token.encode() for role, token in tokens.items()}

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def authorize(self, authorization: str | None, operation: Operation) -> str | None:
        """The caller's role, given its `authorization` header; None when auth is off.
        Raises Unauthenticated (no or unknown token) or PermissionDenied (the role may not do `operation`)."""
        if not self.enabled:
            return None
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("this server requires a token: send the header 'authorization: Bearer <token>'")
        presented = token.strip().encode()
        # Compare against every token, in constant time each, so timing tells nothing about which one is close.
        matches = [role for role, expected in self._tokens.items() if hmac.compare_digest(presented, expected)]
        if not matches:
            raise Unauthenticated("the bearer token is not recognised: check the token you were given")
        role = matches[0]
        if operation not in ROLE_OPERATIONS[role]:
            allowed = ", ".join(sorted(ROLE_OPERATIONS[role]))
            raise PermissionDenied(f"role '{role}' may not call {operation.value} operations (it may: {allowed})")
        return role
