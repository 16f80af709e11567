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
import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from headroom.shell.apiclient import ApiClient, ApiException
from headroom.shell.backoff import jittered
from headroom.shell.failpoints import async_failpoint

log = logging.getLogger("headroom.shell.leader")


def _micro_time(at: datetime) -> str:
    """A Lease's times are MicroTime: RFC 3339 with microseconds."""
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class LeaderElector:
    client: ApiClient
    namespace: str
    name: str
    identity: str
    lease_seconds: int = 30
    renew_seconds: float = 10.0
    retry_seconds: float = 5.0
    clock: Callable[[], float] = time.monotonic
    _observed: tuple[Any, ...] | None = field(default=None, init=False)
    _observed_at: float = field(default=0.0, init=False)
    # Why this replica cannot take part in the election at all (its Lease is forbidden to it, or its
    # namespace does not exist), or None. Waiting would never end: the liveness probe reports it.
    problem: str | None = field(default=None, init=False)

    def _now(self) -> datetime:
        return datetime.now(UTC)

    @property
    def _leases(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"

    def _spec(self, acquire_time: str | None, transitions: int) -> dict[str, Any]:
        now = _micro_time(self._now())
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds,
            "acquireTime": acquire_time or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    async def try_acquire_or_renew(self) -> bool:
        """One attempt. True when this replica holds the lease afterwards."""
        try:
            lease = await self.client.request("GET", f"{self._leases}/{self.name}")
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name},
                "spec": self._spec(None, 0),
            }
            try:
                created = await self.client.request("POST", self._leases, body=body)
            except ApiException as create_exc:
                if create_exc.status == 409:
                    return False
                raise
            self._remember(created)
            return True
        spec = lease.get("spec") or {}
        record = (
            spec.get("holderIdentity"),
            spec.get("renewTime"),
            spec.get("acquireTime"),
            spec.get("leaseTransitions"),
        )
        if record != self._observed:
            self._observed, self._observed_at = record, self.clock()
        holder = spec.get("holderIdentity")
        expired = self.clock() - self._observed_at >= (spec.get("leaseDurationSeconds") or self.lease_seconds)
        if holder and holder != self.identity and not expired:
            return False
        mine = holder == self.identity
        if mine:
            await async_failpoint("lease-renew-before-write")
        transitions = (spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        lease["spec"] = self._spec(spec.get("acquireTime") if mine else None, transitions)
        try:
            # replace carries metadata.resourceVersion: a concurrent winner makes this a 409.
            updated = await self.client.request("PUT", f"{self._leases}/{self.name}", body=lease)
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

    def _remember(self, lease: dict[str, Any]) -> None:
        spec = lease.get("spec") or {}
        self._observed = (
            spec.get("holderIdentity"),
            spec.get("renewTime"),
            spec.get("acquireTime"),
            spec.get("leaseTransitions"),
        )
        self._observed_at = self.clock()

    async def release(self) -> None:
        """On a clean shutdown, hand over at once instead of after a lease duration."""
        try:
            lease = await self.client.request("GET", f"{self._leases}/{self.name}")
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") == self.identity:
                lease = copy.deepcopy(lease)
                lease["spec"] = {**spec, "holderIdentity": None, "leaseDurationSeconds": 1}
                await self.client.request("PUT", f"{self._leases}/{self.name}", body=lease)
                log.info("released lease %s/%s", self.namespace, self.name)
        except Exception as exc:  # ApiException, OSError, aiohttp's errors: a release is best effort
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
                if await self.try_acquire_or_renew():
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
            except Exception as exc:  # OSError, aiohttp's errors: the API server is away, try again later
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
                if await asyncio.wait_for(self.try_acquire_or_renew(), max(1.0, left)):
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
            except Exception as exc:  # OSError, aiohttp's errors, the timeout above
                log.warning("lease renewal failed: %s", exc or type(exc).__name__)
                pause = min(self.retry_seconds, self.renew_seconds) / 2
            if self.clock() - last_renewed > deadline:
                log.error("could not renew lease %s/%s in time; stepping down", self.namespace, self.name)
                return
