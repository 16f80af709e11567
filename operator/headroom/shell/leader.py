"""Leader election on a coordination.k8s.io Lease, so that several replicas run with exactly one active.

Why a Lease and not Kopf's peering: peering is priority-based and freezes every replica when two
share a priority, and it needs Kopf's own peering CRD. A Lease is the mechanism the Kubernetes
control plane itself uses, needs only a namespaced Role, and has a bounded take-over time.

The algorithm follows client-go's: a replica holds the lease while it renews it; the others watch
the record and take it over only when it has not changed for a whole lease duration, measured on
their own monotonic clock, so clock skew between machines does not matter. Writes carry the
resourceVersion they read, so two candidates cannot both win (the loser gets a 409). A 409 while
renewing its own lease (someone else touched the object) is not a loss: the holder reads it again and
retries until its deadline. Every call has a timeout, so a connection that hangs cannot keep a
holder from stepping down in time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kubernetes
from kubernetes.client import ApiException

from headroom.shell.backoff import jittered
from headroom.shell.failpoints import failpoint
from headroom.shell.kube import REQUEST_TIMEOUT

log = logging.getLogger("headroom.shell.leader")


@dataclass
class LeaderElector:
    coordination: kubernetes.client.CoordinationV1Api
    namespace: str
    name: str
    identity: str
    lease_seconds: int = 30
    renew_seconds: float = 10.0
    retry_seconds: float = 5.0
    clock: Callable[[], float] = time.monotonic
    _observed: tuple[Any, ...] | None = field(default=None, init=False)
    _observed_at: float = field(default=0.0, init=False)
    _resource_version: str | None = field(default=None, init=False)
    # Why this replica cannot take part in the election at all (its Lease is forbidden to it, or its
    # namespace does not exist), or None. Waiting would never end: the liveness probe reports it.
    problem: str | None = field(default=None, init=False)

    def _now(self) -> datetime:
        return datetime.now(UTC)

    def _spec(self, acquire_time: datetime | None, transitions: int) -> kubernetes.client.V1LeaseSpec:
        now = self._now()
        return kubernetes.client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=self.lease_seconds,
            acquire_time=acquire_time or now,
            renew_time=now,
            lease_transitions=transitions,
        )

    def try_acquire_or_renew(self) -> bool:
        """One attempt (blocking I/O). True when this replica holds the lease afterwards."""
        try:
            lease = self.coordination.read_namespaced_lease(self.name, self.namespace, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = kubernetes.client.V1Lease(
                metadata=kubernetes.client.V1ObjectMeta(name=self.name), spec=self._spec(None, 0)
            )
            try:
                created = self.coordination.create_namespaced_lease(
                    self.namespace, body, _request_timeout=REQUEST_TIMEOUT
                )
            except ApiException as create_exc:
                if create_exc.status == 409:
                    return False
                raise
            self._remember(created)
            return True
        spec = lease.spec or kubernetes.client.V1LeaseSpec()
        record = (spec.holder_identity, spec.renew_time, spec.acquire_time, spec.lease_transitions)
        if record != self._observed:
            self._observed, self._observed_at = record, self.clock()
        holder = spec.holder_identity
        expired = self.clock() - self._observed_at >= (spec.lease_duration_seconds or self.lease_seconds)
        if holder and holder != self.identity and not expired:
            return False
        mine = holder == self.identity
        if mine:
            failpoint("lease-renew-before-write")
        lease.spec = self._spec(spec.acquire_time if mine else None, (spec.lease_transitions or 0) + (0 if mine else 1))
        try:
            # replace carries metadata.resourceVersion: a concurrent winner makes this a 409.
            updated = self.coordination.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 409 and not mine:
                return False  # another candidate won the race
            # Renewing: the Lease changed since it was read (a label, an annotation, a racing
            # standby that lost anyway). The caller reads it again; only another holder is a loss.
            raise
        if not mine:
            log.info("acquired lease %s/%s (previous holder: %s)", self.namespace, self.name, holder or "none")
        self._remember(updated)
        return True

    def _remember(self, lease: kubernetes.client.V1Lease) -> None:
        spec = lease.spec or kubernetes.client.V1LeaseSpec()
        self._observed = (spec.holder_identity, spec.renew_time, spec.acquire_time, spec.lease_transitions)
        self._observed_at = self.clock()
        self._resource_version = lease.metadata.resource_version if lease.metadata else None

    def release(self) -> None:
        """On a clean shutdown, hand over at once instead of after a lease duration."""
        try:
            lease = self.coordination.read_namespaced_lease(self.name, self.namespace, _request_timeout=REQUEST_TIMEOUT)
            if lease.spec and lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.lease_duration_seconds = 1
                self.coordination.replace_namespaced_lease(
                    self.name, self.namespace, lease, _request_timeout=REQUEST_TIMEOUT
                )
                log.info("released lease %s/%s", self.namespace, self.name)
        except Exception as exc:  # ApiException, OSError, urllib3's errors: a release is best effort
            log.warning("could not release the lease: %s", exc)

    def _excluded(self, exc: ApiException) -> str | None:
        """A refusal that no amount of waiting fixes: the replica is not a candidate at all."""
        if exc.status in (401, 403):
            return (
                f"cannot take part in leader election: access to Lease {self.namespace}/{self.name} is "
                f"refused ({exc.status} {exc.reason}); the shipped Role grants only the Lease named "
                f"'headroom' in its namespace: grant get and update on '{self.name}' there, or use "
                "--lease-name=headroom"
            )
        if exc.status == 404:
            return (
                f"cannot take part in leader election: namespace {self.namespace} does not exist "
                "(--namespace names where the Lease is kept)"
            )
        return None

    async def acquire(self) -> None:
        """Wait until this replica leads."""
        log.info("waiting for lease %s/%s as %s", self.namespace, self.name, self.identity)
        while True:
            try:
                if await asyncio.to_thread(self.try_acquire_or_renew):
                    if self.problem is not None:
                        log.info("lease %s/%s is accessible again", self.namespace, self.name)
                    self.problem = None
                    return
                self.problem = None
            except ApiException as exc:
                problem = self._excluded(exc)
                if problem is None:
                    log.warning("lease check failed: %s %s", exc.status, exc.reason)
                elif problem != self.problem:
                    log.error("%s", problem)  # once, not every retry; /healthz keeps saying it
                self.problem = problem
            except Exception as exc:  # OSError, urllib3's errors: the API server is away, try again later
                log.warning("lease check failed: %s", exc or type(exc).__name__)
            await asyncio.sleep(jittered(self.retry_seconds, 0.2))

    async def hold(self) -> None:
        """Renew until renewing fails for a whole lease duration; then return (leadership is lost)."""
        last_renewed = self.clock()
        deadline = self.lease_seconds - self.renew_seconds  # stop acting a little before the lease ends
        pause = self.renew_seconds
        while True:
            await asyncio.sleep(jittered(pause))
            pause = self.renew_seconds
            left = deadline - (self.clock() - last_renewed)
            try:
                # Bounded: a renewal stuck on a silent connection must not outlive the deadline.
                if await asyncio.wait_for(asyncio.to_thread(self.try_acquire_or_renew), max(1.0, left)):
                    last_renewed = self.clock()
                    continue
                log.error("lease %s/%s was taken over by another replica", self.namespace, self.name)
                return
            except ApiException as exc:
                if exc.status == 409:
                    log.info("lease %s/%s changed while renewing it (409); reading it again", self.namespace, self.name)
                else:
                    log.warning("lease renewal failed: %s", exc)
                pause = min(self.retry_seconds, self.renew_seconds) / 2  # retry soon, within the deadline
            except Exception as exc:  # OSError, urllib3's errors, the timeout above
                log.warning("lease renewal failed: %s", exc or type(exc).__name__)
                pause = min(self.retry_seconds, self.renew_seconds) / 2
            if self.clock() - last_renewed > deadline:
                log.error("could not renew lease %s/%s in time; stepping down", self.namespace, self.name)
                return
