"""Every name Headroom puts on the wire, once: the API it serves, the objects it owns, the labels and
annotations it reads and writes, the name it writes under. Nothing else in the code spells them."""

from __future__ import annotations

# The Project API (crds/projects.headroom.dev.yaml).
GROUP = "headroom.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "Project"
PLURAL = "projects"

# Who writes: the server-side apply field manager, the Event source, the logger.
FIELD_MANAGER = "headroom"
COMPONENT = "headroom"

# The objects Headroom owns in each governed namespace.
QUOTA_NAME = "headroom"
LIMITRANGE_NAME = "headroom-defaults"

# Labels. PROJECT_LABEL is also how the platform confirms a claim, on the Namespace.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "headroom"
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
PROJECT_LABEL = f"{GROUP}/project"

# Annotations on a Project (written by people or GitOps, read by Headroom).
APPROVED_CHANGE_ANNOTATION = f"{GROUP}/approved-change"
APPROVED_BY_ANNOTATION = f"{GROUP}/approved-by"
REQUESTED_BY_ANNOTATION = f"{GROUP}/requested-by"

# Annotations on Headroom's own quota (written by Headroom).
STATE_ANNOTATION = f"{GROUP}/state"
GOVERNED_ANNOTATION = f"{GROUP}/governed-hard"
APPLIED_CHANGE_ANNOTATION = f"{GROUP}/applied-change"
DAILY_PEAKS_ANNOTATION = f"{GROUP}/daily-peaks"
# The Prometheus source's closed daily peaks, so that a restart asks only the days since.
PROMETHEUS_DAYS_ANNOTATION = f"{GROUP}/prometheus-days"

# Forecast alerts: Alertmanager's alertname, and the Project status field that holds their outbox.
FORECAST_ALERTNAME = "HeadroomQuotaForecast"
FORECAST_ALERTS_FIELD = "forecastAlerts"

# Raises that end (core/expiry.py): the record on the quota, Alertmanager's alertnames, the outbox field.
RAISE_EXPIRY_ANNOTATION = f"{GROUP}/raise-expiry"
RAISE_ENDING_ALERT = "HeadroomRaiseEnding"
RAISE_WITHDRAWN_ALERT = "HeadroomRaiseWithdrawn"
RAISE_NOTICES_FIELD = "raiseNotices"

# The leader-election Lease, in the operator's namespace.
LEASE_NAME = "headroom"

# The capacity override a platform approver sets on a Project: the change id it lets past the
# overcommit budget, and who signed it (core/capacity.py; the admission policy checks both).
CAPACITY_OVERRIDE_ANNOTATION = f"{GROUP}/capacity-override"
CAPACITY_OVERRIDE_BY_ANNOTATION = f"{GROUP}/capacity-override-by"

# Quota denials (core/denials.py): the Events the workload controllers post when the API server
# refuses a pod, watched with this server-side field selector; what Headroom says about them.
FAILED_CREATE_REASON = "FailedCreate"
FAILED_CREATE_SELECTOR = f"reason={FAILED_CREATE_REASON}"
QUOTA_DENIED_CONDITION = "QuotaDenied"
QUOTA_DENIED_ALERTNAME = "HeadroomQuotaDenied"
