"""A typed, validated view of a Project custom resource (headroom.dev/v1alpha1).

The API server's CRD schema normally rejects bad objects first, but the CLI
reads files that never went through it, so every check here names the field
path a person has to fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from headroom.core.names import (
    API_VERSION,
    APPROVED_BY_ANNOTATION,
    APPROVED_CHANGE_ANNOTATION,
    GROUP,
    KIND,
    REQUESTED_BY_ANNOTATION,
    VERSION,
)
from headroom.core.quantity import QuantityError, format_quantity, parse_quantity

__all__ = [
    "API_VERSION",
    "APPROVED_BY_ANNOTATION",
    "APPROVED_CHANGE_ANNOTATION",
    "DEFAULTABLE_RESOURCES",
    "DEFAULT_HEADROOM_PERCENT",
    "DEFAULT_HYSTERESIS",
    "DEFAULT_LOOKBACK",
    "DEFAULT_RESOURCES",
    "DEFAULT_THRESHOLDS",
    "ENFORCEMENT_MODES",
    "GOVERNABLE_RESOURCES",
    "GROUP",
    "KIND",
    "REQUESTED_BY_ANNOTATION",
    "VERSION",
    "AlertSettings",
    "LimitDefaults",
    "NamespaceSpec",
    "Owner",
    "ProjectSpec",
    "QuotaSettings",
    "SecretKeyRef",
    "SpecError",
    "format_duration",
    "is_governable",
    "is_whole",
    "parse_duration",
    "parse_project",
    "resource_problem",
]


MAX_REASON = 500
# RFC 3339 with a time zone (what the CRD's format: date-time accepts, and Kubernetes writes).
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")

DEFAULT_RESOURCES: tuple[str, ...] = (
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
    "pods",
)
DEFAULT_HEADROOM_PERCENT = 20
DEFAULT_LOOKBACK = timedelta(days=30)
DEFAULT_THRESHOLDS: tuple[int, ...] = (80, 90, 100)
DEFAULT_HYSTERESIS = 5
DEFAULT_FORECAST_DAYS = 14
DEFAULT_SECRET_KEY = "url"
ENFORCEMENT_MODES: tuple[str, ...] = ("Enforce", "Observe")

# These mirror the CRD schema (crds/projects.headroom.dev.yaml); keep the two in step.
# Anything the API server accepts must parse here, or the operator could not reconcile it.
# Every key a ResourceQuota enforces: the standard names, hugepages, extended resources (requests.
# only: they are never overcommitted, and the quota controller tracks no limits.<extended>), per
# storage class, and object counts. Keys the API server stores but no quota controller counts
# (nvidia.com/gpu without requests., limits.nvidia.com/gpu, foo/bar) are refused: such a quota
# would limit nothing.
COUNT_RESOURCES: tuple[str, ...] = (
    "pods",
    "persistentvolumeclaims",
    "services",
    "services.loadbalancers",
    "services.nodeports",
    "configmaps",
    "secrets",
    "replicationcontrollers",
    "resourcequotas",
)
GOVERNABLE_RESOURCES: tuple[str, ...] = (
    *DEFAULT_RESOURCES,
    "requests.ephemeral-storage",
    "limits.ephemeral-storage",
    "requests.storage",
    *(r for r in COUNT_RESOURCES if r != "pods"),
    "cpu",
    "memory",
    "ephemeral-storage",
)
# [.] rather than a backslash: the same text is a CEL string literal in the CRD, where "\." is no valid escape.
_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
HUGEPAGES_PATTERN = r"^(requests[.])?hugepages-[1-9][0-9]*(Ki|Mi|Gi)$"
EXTENDED_PATTERN = rf"^requests[.]{_SUBDOMAIN}/[A-Za-z0-9]([-A-Za-z0-9_.]{{0,61}}[A-Za-z0-9])?$"
STORAGE_CLASS_PATTERN = (
    rf"^{_SUBDOMAIN}[.]storageclass[.]storage[.]k8s[.]io/(requests[.]storage|persistentvolumeclaims)$"
)
COUNT_PATTERN = r"^count/[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$"
DEFAULTABLE_RESOURCES: tuple[str, ...] = ("cpu", "memory", "ephemeral-storage")
MAX_HEADROOM_PERCENT = 1000
MAX_HYSTERESIS = 50
MAX_FORECAST_DAYS = 365
MAX_THRESHOLDS = 10

_DURATION = re.compile(
    r"(?:(?P<w>[0-9]+)w)?(?:(?P<d>[0-9]+)d)?(?:(?P<h>[0-9]+)h)?(?:(?P<m>[0-9]+)m)?(?:(?P<s>[0-9]+)s)?"
)
_DURATION_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
_MAX_DURATION_TEXT = 32
_DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DNS_LABEL_HINT = "lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63"


class SpecError(ValueError):
    """An invalid Project; `path` is the offending field, e.g. "spec.quota.lookback"."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class Owner:
    team: str
    contacts: tuple[str, ...] = ()
    business_hours: str | None = None  # parsed by the alerting code, which knows time zones
    holidays: tuple[str, ...] = ()  # ISO dates (YYYY-MM-DD), checked to be real dates


@dataclass(frozen=True)
class NamespaceSpec:
    name: str
    # Absolute hard values the owner asks for; empty means "use the derived quota".
    requested: Mapping[str, Decimal] = field(default_factory=dict)
    # When the raise ends (expiry.py withdraws it then), and why it is asked for: both in the change id.
    until: datetime | None = None
    reason: str | None = None


@dataclass(frozen=True)
class QuotaSettings:
    resources: tuple[str, ...] = DEFAULT_RESOURCES
    headroom_percent: int = DEFAULT_HEADROOM_PERCENT
    lookback: timedelta = DEFAULT_LOOKBACK
    minimum: Mapping[str, Decimal] = field(default_factory=dict)
    enforcement: str | None = None  # None: follow the operator's --mode


@dataclass(frozen=True)
class LimitDefaults:
    requests: Mapping[str, Decimal] = field(default_factory=dict)
    limits: Mapping[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class SecretKeyRef:
    # Always in the operator's namespace: it may read Secrets there and nowhere else.
    name: str
    key: str = DEFAULT_SECRET_KEY


@dataclass(frozen=True)
class AlertSettings:
    thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS  # ascending percentages of the quota
    hysteresis: int = DEFAULT_HYSTERESIS  # percentage points
    cooldown: timedelta | None = None  # None: one business day
    urgent_when_full: bool = False
    webhook_secret_ref: SecretKeyRef | None = None
    forecast_days: int = DEFAULT_FORECAST_DAYS  # a forecast full within this many days alerts the owners
    denials: str = "Immediate"  # quota-denial incidents: at once, or only in business hours


@dataclass(frozen=True)
class ProjectSpec:
    name: str
    owner: Owner
    namespaces: tuple[NamespaceSpec, ...]
    quota: QuotaSettings = field(default_factory=QuotaSettings)
    defaults: LimitDefaults = field(default_factory=LimitDefaults)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    approved_change: str | None = None
    approved_by: str | None = None
    requested_by: str | None = None
    reason: str | None = None  # why the current terms are asked for; part of the change id

    @property
    def namespace_names(self) -> tuple[str, ...]:
        return tuple(ns.name for ns in self.namespaces)

    @property
    def requested(self) -> dict[str, dict[str, Decimal]]:
        """Change requests by namespace, leaving out namespaces that request nothing."""
        return {ns.name: dict(ns.requested) for ns in self.namespaces if ns.requested}


def _show(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def is_governable(resource: str) -> bool:
    """Whether Headroom may put `resource` in a quota: a key a ResourceQuota enforces (see COUNT_RESOURCES)."""
    return resource_problem(resource) is None


def resource_problem(resource: str) -> str | None:
    """Why `resource` is no quota key Headroom can govern, in words; None when it is one."""
    if resource in GOVERNABLE_RESOURCES or any(
        re.fullmatch(pattern, resource) for pattern in (HUGEPAGES_PATTERN, STORAGE_CLASS_PATTERN, COUNT_PATTERN)
    ):
        return None
    if re.fullmatch(EXTENDED_PATTERN, resource) and "kubernetes.io/" not in resource:
        return None
    if resource.startswith("limits.") and ("/" in resource or resource.startswith("limits.hugepages-")):
        wanted = "requests." + resource.removeprefix("limits.")
        return (
            "extended resources and hugepages are never overcommitted, so a quota limits them only as "
            f"requests.<name>: use {wanted}"
        )
    if "/" in resource and not resource.startswith(("requests.", "count/")) and ".storageclass." not in resource:
        return f"a quota counts an extended resource only as requests.<name>: use requests.{resource}"
    return _NOT_GOVERNABLE


def is_whole(resource: str) -> bool:
    """Whether the resource is counted in whole units: objects, GPUs and other devices, per-class storage.

    The API server refuses a fraction in such a quota (a pod cannot ask for half a GPU).
    """
    return resource in COUNT_RESOURCES or "/" in resource


def parse_duration(text: str) -> timedelta:
    """Parse "30d", "12h", "90m", "45s", "2w" or combinations in that order, like "1d12h".

    Zero ("0s") is a valid duration; callers that need a positive one say so.
    """
    problem = f"{_show(text)} is not a duration like 30d or 12h"
    if not isinstance(text, str) or not text or len(text) > _MAX_DURATION_TEXT:
        raise ValueError(problem)
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(problem)
    parts = {_DURATION_UNITS[unit]: int(amount) for unit, amount in match.groupdict().items() if amount}
    try:
        return timedelta(**parts)
    except OverflowError:
        raise ValueError(f"{_show(text)} is too long a duration") from None


def format_duration(value: timedelta) -> str:
    """The shortest text `parse_duration` reads back as `value`, e.g. 30d or 1d12h."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)


# --- field readers: each takes the raw value and its path, and names the path on failure ---


def _mapping(value: Any, path: str, *, required: bool = False) -> Mapping[str, Any]:
    if value is None:
        if required:
            raise SpecError(path, "is required")
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(path, f"must be a mapping, not {_show(value)}")
    return value


def _list(value: Any, path: str) -> Sequence[Any]:
    if value is None:
        return ()
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise SpecError(path, f"must be a list, not {_show(value)}")
    return value


def _string(value: Any, path: str) -> str | None:
    if value is None or value == "":
        return None
    return _required_string(value, path)


def _required_string(value: Any, path: str) -> str:
    if value is None or value == "":
        raise SpecError(path, "is required")
    if not isinstance(value, str):
        raise SpecError(path, f"must be text, not {_show(value)}")
    return value


def _integer(value: Any, path: str, default: int | None, low: int, high: int | None = None) -> int:
    if value is None:
        if default is None:
            raise SpecError(path, "is required")
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(path, f"{_show(value)} is not a whole number")
    if value < low or (high is not None and value > high):
        bound = f"at least {low}" if high is None else f"between {low} and {high}"
        raise SpecError(path, f"{value} must be {bound}")
    return value


def _boolean(value: Any, path: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise SpecError(path, f"{_show(value)} is not true or false")
    return value


def _positive_duration(value: Any, path: str) -> timedelta | None:
    if value is None:
        return None
    try:
        duration = parse_duration(value)
    except ValueError as error:
        raise SpecError(path, str(error)) from None
    if duration <= timedelta(0):
        raise SpecError(path, f"{_show(value)} must be longer than zero")
    return duration


def _no_unknown_fields(section: Mapping[str, Any], path: str, known: Sequence[str]) -> None:
    # A misspelt key (headroomPercnt) would otherwise be silently ignored and its default used.
    for key in section:
        if key not in known:
            raise SpecError(f"{path}.{key}", f"unknown field (expected one of: {', '.join(known)})")


def _quantities(value: Any, path: str, allowed: Sequence[str] | None = None) -> dict[str, Decimal]:
    """Resource -> non-negative quantity; keys are quota resources unless `allowed` names them."""
    result: dict[str, Decimal] = {}
    for resource, raw in _mapping(value, path).items():
        item_path = f"{path}.{resource}"
        if not isinstance(resource, str):
            raise SpecError(path, f"{_show(resource)} is not a resource name")
        if allowed is not None and resource not in allowed:
            raise SpecError(item_path, f"is not a resource here (expected one of: {', '.join(allowed)})")
        problem = resource_problem(resource) if allowed is None else None
        if problem is not None:
            raise SpecError(item_path, problem)
        try:
            amount = parse_quantity(raw)
        except QuantityError as error:
            raise SpecError(item_path, str(error)) from None
        if amount < 0:
            raise SpecError(item_path, f"{_show(raw)} is negative; a quota cannot be below zero")
        if allowed is None and is_whole(resource) and amount != amount.to_integral_value():
            raise SpecError(item_path, f"{_show(raw)} is not a whole number; {resource} is counted in whole units")
        result[resource] = amount
    return result


_NOT_GOVERNABLE = (
    f"is not a resource Headroom can govern (expected one of: {', '.join(GOVERNABLE_RESOURCES)}, "
    "requests.hugepages-<size>, requests.<extended resource> such as requests.nvidia.com/gpu, "
    "<class>.storageclass.storage.k8s.io/requests.storage or /persistentvolumeclaims, "
    "or count/<resource> such as count/jobs.batch)"
)


def _dns_label(value: Any, path: str) -> str:
    name = _required_string(value, path)
    if not _DNS_LABEL.fullmatch(name):
        raise SpecError(path, f"{_show(name)} is not a DNS label ({_DNS_LABEL_HINT})")
    return name


# --- sections ---


def _owner(raw: Any) -> Owner:
    path = "spec.owner"
    section = _mapping(raw, path, required=True)
    _no_unknown_fields(section, path, ("team", "contacts", "businessHours", "holidays"))
    team = _dns_label(section.get("team"), f"{path}.team")
    contacts = tuple(
        _required_string(contact, f"{path}.contacts[{index}]")
        for index, contact in enumerate(_list(section.get("contacts"), f"{path}.contacts"))
    )
    holidays: list[str] = []
    for index, holiday in enumerate(_list(section.get("holidays"), f"{path}.holidays")):
        item_path = f"{path}.holidays[{index}]"
        # YAML turns an unquoted 2026-12-25 into a date; that is what the user meant.
        text = holiday.isoformat() if isinstance(holiday, date) else _required_string(holiday, item_path)
        try:
            if not _DATE.fullmatch(text):
                raise ValueError
            date.fromisoformat(text)
        except ValueError:
            raise SpecError(item_path, f"{_show(text)} is not a date like 2026-12-25") from None
        holidays.append(text)
    return Owner(
        team=team,
        contacts=contacts,
        business_hours=_string(section.get("businessHours"), f"{path}.businessHours"),
        holidays=tuple(holidays),
    )


def _quota(raw: Any) -> QuotaSettings:
    path = "spec.quota"
    section = _mapping(raw, path)
    _no_unknown_fields(section, path, ("resources", "headroomPercent", "lookback", "minimum", "enforcement"))

    resources: tuple[str, ...] = DEFAULT_RESOURCES
    if section.get("resources") is not None:
        listed = _list(section["resources"], f"{path}.resources")
        if not listed:
            raise SpecError(f"{path}.resources", "must name at least one resource")
        names: list[str] = []
        for index, resource in enumerate(listed):
            item_path = f"{path}.resources[{index}]"
            name = _required_string(resource, item_path)
            problem = resource_problem(name)
            if problem is not None:
                # The generic sentence reads on from the name ("gpus" is not a resource ...).
                joint = " " if problem == _NOT_GOVERNABLE else ": "
                raise SpecError(item_path, f"{_show(name)}{joint}{problem}")
            if name in names:
                raise SpecError(item_path, f"{_show(name)} is listed twice")
            names.append(name)
        resources = tuple(names)

    lookback = _positive_duration(section.get("lookback"), f"{path}.lookback")

    enforcement = _string(section.get("enforcement"), f"{path}.enforcement")
    if enforcement is not None and enforcement not in ENFORCEMENT_MODES:
        raise SpecError(f"{path}.enforcement", f"{_show(enforcement)} must be Enforce or Observe")

    # Keys outside spec.quota.resources are allowed, as in the CRD; they simply have no effect.
    minimum = _quantities(section.get("minimum"), f"{path}.minimum")

    return QuotaSettings(
        resources=resources,
        headroom_percent=_integer(
            section.get("headroomPercent"),
            f"{path}.headroomPercent",
            DEFAULT_HEADROOM_PERCENT,
            0,
            MAX_HEADROOM_PERCENT,
        ),
        lookback=lookback if lookback is not None else DEFAULT_LOOKBACK,
        minimum=minimum,
        enforcement=enforcement,
    )


def _namespaces(raw: Any) -> tuple[NamespaceSpec, ...]:
    path = "spec.namespaces"
    if raw is None:
        raise SpecError(path, "is required: list at least one namespace")
    entries = _list(raw, path)
    if not entries:
        raise SpecError(path, "must list at least one namespace")
    seen: set[str] = set()
    namespaces: list[NamespaceSpec] = []
    for index, entry in enumerate(entries):
        entry_path = f"{path}[{index}]"
        section = _mapping(entry, entry_path, required=True)
        _no_unknown_fields(section, entry_path, ("name", "requested", "until", "reason"))
        name = _dns_label(section.get("name"), f"{entry_path}.name")
        if name in seen:
            raise SpecError(f"{entry_path}.name", f"{_show(name)} is listed twice")
        seen.add(name)
        requested = _quantities(section.get("requested"), f"{entry_path}.requested")
        reason = _string(section.get("reason"), f"{entry_path}.reason")
        if reason is not None and len(reason) > MAX_REASON:
            raise SpecError(
                f"{entry_path}.reason", f"is {len(reason)} characters long; at most {MAX_REASON} are allowed"
            )
        until = _moment(section.get("until"), f"{entry_path}.until")
        namespaces.append(NamespaceSpec(name=name, requested=requested, until=until, reason=reason))
    return tuple(namespaces)


def _moment(value: Any, path: str) -> datetime | None:
    """An RFC 3339 time with its offset (2026-12-31T18:00:00Z), as an aware UTC datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):  # YAML loaders turn an unquoted timestamp into a datetime
        moment = value
    else:
        text = _required_string(value, path)
        if not RFC3339.fullmatch(text):
            raise SpecError(path, f"{_show(text)} is not an RFC 3339 time like 2026-12-31T18:00:00Z")
        try:
            moment = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            raise SpecError(path, f"{_show(text)} is not a valid time") from None
    if moment.tzinfo is None:
        raise SpecError(path, "needs a time zone offset (Z or +02:00)")
    return moment.astimezone(UTC)


def _defaults(raw: Any) -> LimitDefaults:
    path = "spec.defaults"
    section = _mapping(raw, path)
    _no_unknown_fields(section, path, ("requests", "limits"))
    requests = _quantities(section.get("requests"), f"{path}.requests", DEFAULTABLE_RESOURCES)
    limits = _quantities(section.get("limits"), f"{path}.limits", DEFAULTABLE_RESOURCES)
    # A LimitRange whose default request exceeds its default limit is refused by the API server.
    for resource, request in requests.items():
        limit = limits.get(resource)
        if limit is not None and request > limit:
            raise SpecError(
                f"{path}.requests.{resource}",
                f"{format_quantity(request, resource)} is above spec.defaults.limits.{resource} "
                f"({format_quantity(limit, resource)})",
            )
    return LimitDefaults(requests=requests, limits=limits)


def _secret_ref(raw: Any, path: str) -> SecretKeyRef | None:
    if raw is None:
        return None
    section = _mapping(raw, path)
    # No namespace, as in the CRD: a file the CLI accepts must be one the API server accepts.
    _no_unknown_fields(section, path, ("name", "key"))
    return SecretKeyRef(
        name=_required_string(section.get("name"), f"{path}.name"),
        key=_string(section.get("key"), f"{path}.key") or DEFAULT_SECRET_KEY,
    )


def _alerts(raw: Any) -> AlertSettings:
    path = "spec.alerts"
    section = _mapping(raw, path)
    _no_unknown_fields(
        section,
        path,
        ("thresholds", "hysteresis", "cooldown", "urgentWhenFull", "webhookSecretRef", "forecastDays", "denials"),
    )
    denials = section.get("denials", "Immediate")
    if denials not in ("Immediate", "BusinessHours"):
        raise SpecError(f"{path}.denials", f"{_show(denials)} is not Immediate or BusinessHours")
    thresholds = DEFAULT_THRESHOLDS
    if section.get("thresholds") is not None:
        listed = _list(section["thresholds"], f"{path}.thresholds")
        if not listed:
            raise SpecError(f"{path}.thresholds", "must list at least one percentage")
        if len(listed) > MAX_THRESHOLDS:
            raise SpecError(f"{path}.thresholds", f"lists {len(listed)} percentages; at most {MAX_THRESHOLDS}")
        values: list[int] = []
        for index, threshold in enumerate(listed):
            value = _integer(threshold, f"{path}.thresholds[{index}]", None, 1, 100)
            # Sorting silently would let a file pass here that the API server then refuses.
            if values and value <= values[-1]:
                raise SpecError(
                    f"{path}.thresholds[{index}]",
                    f"{value} does not follow {values[-1]}; thresholds must be strictly increasing, e.g. [80, 90, 100]",
                )
            values.append(value)
        thresholds = tuple(values)
    return AlertSettings(
        thresholds=thresholds,
        hysteresis=_integer(section.get("hysteresis"), f"{path}.hysteresis", DEFAULT_HYSTERESIS, 0, MAX_HYSTERESIS),
        cooldown=_positive_duration(section.get("cooldown"), f"{path}.cooldown"),
        urgent_when_full=_boolean(section.get("urgentWhenFull"), f"{path}.urgentWhenFull", False),
        webhook_secret_ref=_secret_ref(section.get("webhookSecretRef"), f"{path}.webhookSecretRef"),
        forecast_days=_integer(
            section.get("forecastDays"), f"{path}.forecastDays", DEFAULT_FORECAST_DAYS, 1, MAX_FORECAST_DAYS
        ),
        denials=str(denials),
    )


def parse_project(obj: Mapping[str, Any]) -> ProjectSpec:
    """Read a whole Project object (from the API or a YAML file), filling in defaults."""
    if not isinstance(obj, Mapping):
        raise SpecError("(object)", f"a Project must be a mapping, not {_show(obj)}")
    api_version = obj.get("apiVersion")
    if api_version is not None and api_version != API_VERSION:
        raise SpecError("apiVersion", f"{_show(api_version)} is not {API_VERSION}")
    kind = obj.get("kind")
    if kind is not None and kind != KIND:
        raise SpecError("kind", f"{_show(kind)} is not {KIND}")

    metadata = _mapping(obj.get("metadata"), "metadata", required=True)
    name = _dns_label(metadata.get("name"), "metadata.name")
    annotations = _mapping(metadata.get("annotations"), "metadata.annotations")
    approved_change = _string(
        annotations.get(APPROVED_CHANGE_ANNOTATION), f"metadata.annotations[{APPROVED_CHANGE_ANNOTATION}]"
    )
    approved_by = _string(annotations.get(APPROVED_BY_ANNOTATION), f"metadata.annotations[{APPROVED_BY_ANNOTATION}]")
    requested_by = _string(annotations.get(REQUESTED_BY_ANNOTATION), f"metadata.annotations[{REQUESTED_BY_ANNOTATION}]")

    spec = _mapping(obj.get("spec"), "spec", required=True)
    _no_unknown_fields(spec, "spec", ("owner", "namespaces", "quota", "defaults", "alerts", "reason"))
    reason = _string(spec.get("reason"), "spec.reason")
    if reason is not None and len(reason) > MAX_REASON:
        raise SpecError("spec.reason", f"is {len(reason)} characters long; at most {MAX_REASON} are allowed")
    owner = _owner(spec.get("owner"))
    quota = _quota(spec.get("quota"))
    return ProjectSpec(
        name=name,
        owner=owner,
        namespaces=_namespaces(spec.get("namespaces")),
        quota=quota,
        defaults=_defaults(spec.get("defaults")),
        alerts=_alerts(spec.get("alerts")),
        approved_change=approved_change.strip() if approved_change else None,
        approved_by=approved_by.strip() if approved_by else None,
        requested_by=requested_by.strip() if requested_by else None,
        reason=reason or None,
    )
