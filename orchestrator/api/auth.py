"""Authentication and authorization the way a Kubernetes aggregated API server does them.

The bearer token goes to the API server in a TokenReview (who is this?), then the action to a
SubjectAccessReview (may this user create / get / list / delete podmigrations in that namespace?).
So the API needs no user database and no roles of its own: whoever may `kubectl create` a
PodMigration may POST one, and RBAC is the only place permissions are granted. Answers are cached
briefly (`api.auth_cache_ttl_seconds`, keyed by a hash of the token, never the token itself), as
kube-apiserver's own webhook authenticator and authorizer do, so a client polling a migration does
not cost two extra API calls per poll.

`Access` is the small protocol the routes depend on; `KubernetesAccess` is the real one and
`OpenAccess` the `authentication: none` mode for a local control plane.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from apollo_api.podmigration import GROUP, PLURAL
from common.errors import PermissionDenied, Unauthenticated, Unavailable


@dataclass(frozen=True)
class User:
    """An authenticated user as TokenReview reports it (and SubjectAccessReview wants it)."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = field(default_factory=tuple)


ANONYMOUS_LOCAL = User(name="system:anonymous-local", groups=("system:unauthenticated",))


class Access(Protocol):
    """Who is calling, and may they do this? Both raise the DomainError the caller should see."""

    def authenticate(self, authorization_header: str) -> User: ...

    def authorize(self, user: User, verb: str, namespace: str, name: str = "") -> None: ...


def bearer_token(header: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; Unauthenticated otherwise."""
    if not header:
        raise Unauthenticated("no bearer token: send Authorization: Bearer <service-account or user token>")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization header must be 'Bearer <token>'")
    return token.strip()


K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """A small thread-safe LRU whose entries expire; the clock is injectable for tests."""

    def __init__(self, ttl_seconds: float, max_entries: int = 4096, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            expires, value = item
            if self._clock() >= expires:
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._items[key] = (self._clock() + self.ttl, value)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)


class OpenAccess:
    """`authentication: none`: everyone is a local anonymous user allowed everything (local use only)."""

    def authenticate(self, authorization_header: str) -> User:
        return ANONYMOUS_LOCAL

    def authorize(self, user: User, verb: str, namespace: str, name: str = "") -> None:
        return None


def _describe(verb: str, namespace: str, name: str) -> str:
    target = f"{PLURAL}.{GROUP}" + (f" {name!r}" if name else "")
    where = f"in namespace {namespace!r}" if namespace else "at the cluster scope"
    return f"{verb} {target} {where}"


class KubernetesAccess:
    """TokenReview + SubjectAccessReview through the orchestrator's own API client.

    The orchestrator's service account needs `create` on `tokenreviews` and `subjectaccessreviews`
    (`manifests/orchestrator/api-rbac.yaml`, the same grant as `system:auth-delegator`).
    """

    def __init__(self, api_client: Any, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        from kubernetes import client

        self._authn = client.AuthenticationV1Api(api_client)
        self._authz = client.AuthorizationV1Api(api_client)
        self._users: TtlCache[str, User | str] = TtlCache(ttl_seconds, clock=clock)
        self._decisions: TtlCache[tuple[Any, ...], tuple[bool, str]] = TtlCache(ttl_seconds, clock=clock)

    def authenticate(self, authorization_header: str) -> User:
        token = bearer_token(authorization_header)
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._users.get(key)
        if cached is None:
            cached = self._review_token(token)
            self._users.put(key, cached)
        if isinstance(cached, str):
            raise Unauthenticated(cached)
        return cached

    def _review_token(self, token: str) -> User | str:
        from kubernetes import client

        body = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
        try:
            review = self._authn.create_token_review(body)
        except Exception as exc:  # the API server is unreachable or refused us: not the caller's fault
            raise Unavailable(f"cannot review the token with the API server: {_short(exc)}") from None
        status = review.status
        if status is None or not status.authenticated or status.user is None:
            error = (status.error if status is not None else "") or "token not recognised"
            return f"token not accepted by the API server: {error}"
        user = status.user
        extra = tuple(sorted((str(k), tuple(v or ())) for k, v in (user.extra or {}).items()))
        return User(name=user.username or "", uid=user.uid or "", groups=tuple(user.groups or ()), extra=extra)

    def authorize(self, user: User, verb: str, namespace: str, name: str = "") -> None:
        key = (user, verb, namespace, name)
        decision = self._decisions.get(key)
        if decision is None:
            decision = self._review_access(user, verb, namespace, name)
            self._decisions.put(key, decision)
        allowed, reason = decision
        if not allowed:
            suffix = f": {reason}" if reason else ""
            raise PermissionDenied(f"user {user.name!r} cannot {_describe(verb, namespace, name)}{suffix}")

    def _review_access(self, user: User, verb: str, namespace: str, name: str) -> tuple[bool, str]:
        from kubernetes import client

        spec = client.V1SubjectAccessReviewSpec(
            user=user.name,
            uid=user.uid or None,
            groups=list(user.groups) or None,
            extra={k: list(v) for k, v in user.extra} or None,
            resource_attributes=client.V1ResourceAttributes(
                group=GROUP, resource=PLURAL, verb=verb, namespace=namespace or None, name=name or None
            ),
        )
        try:
            review = self._authz.create_subject_access_review(client.V1SubjectAccessReview(spec=spec))
        except Exception as exc:
            raise Unavailable(f"cannot check access with the API server: {_short(exc)}") from None
        status = review.status
        return bool(status and status.allowed), str((status.reason if status else "") or "")


def _short(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    if status is not None:
        return f"HTTP {status} {reason or ''}".strip()
    return type(exc).__name__


def access_for(mode: str, api_client: Any, ttl_seconds: float) -> Access:
    """The Access the settings ask for."""
    if mode == "none":
        return OpenAccess()
    return KubernetesAccess(api_client, ttl_seconds)
