"""The platform's rules for routine approvals, read from a file (normally a ConfigMap mounted into the
operator's Pod: the kubelet swaps in a new version when the ConfigMap changes).

The file is checked for a change (its modification time and size) before each reconcile: a stat of a
local file, no request to the API server. Rules that cannot be parsed are not used at all (raises then
wait for a person, as without rules), and the problem is logged and kept for `headroom` status lines.
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from headroom.core.approval_rules import Rule, RulesError, parse_rules

log = logging.getLogger("headroom")


class RulesFile:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.rules: tuple[Rule, ...] = ()
        self.problem: str | None = None
        self._seen: tuple[float, int] | None = None

    def current(self) -> tuple[Rule, ...]:
        """The rules in force: re-read when the file changed since the last look."""
        if self.path is None:
            return ()
        try:
            stat = self.path.stat()
        except OSError as exc:
            self._refuse(f"cannot read {self.path}: {exc}")
            return self.rules
        if (stat.st_mtime, stat.st_size) == self._seen:
            return self.rules
        self._seen = (stat.st_mtime, stat.st_size)
        try:
            self.rules = parse_rules(yaml.safe_load(self.path.read_text()))
        except (OSError, yaml.YAMLError, RulesError) as exc:
            self._refuse(f"{self.path}: {exc}")
            return self.rules
        self.problem = None
        log.info("approval rules from %s: %s", self.path, ", ".join(r.name for r in self.rules) or "none")
        return self.rules

    def _refuse(self, problem: str) -> None:
        # Fail closed: no rule approves anything while the platform's file is wrong.
        self.rules, self.problem = (), problem
        log.error("approval rules not used (raises wait for a person): %s", problem)
