"""The local AI Core's deployment logs: one JSON line per message in the deployment's
``log.jsonl``, read back as ``GET /v2/lm/deployments/<id>/logs`` answers (``start``, ``end``,
``$top``, ``$order``)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections import defaultdict
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from labkit.local.aicore.common import bad, int_param, log_time, now, parse_time
from labkit.local.aicore.store import Store

LOG_DEFAULT_TOP = 1000
LOG_MAX_TOP = 5000


class DeploymentLogs:
    """Appends to and reads each deployment's log (one lock per deployment)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)

    def path(self, dep_id: str) -> Path:
        return self.store.work_dir(dep_id) / "log.jsonl"

    def append(self, dep_id: str, line: str) -> None:
        path = self.path(dep_id)
        record = json.dumps({"timestamp": log_time(now()), "msg": line}) + "\n"
        with self._locks[dep_id]:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(record)

    def read(self, dep_id: str, query: Mapping[str, str]) -> dict[str, Any]:
        """The log records the query asks for, as the logs API answers."""
        top = int_param(query, "$top", LOG_DEFAULT_TOP)
        if top is None or not 1 <= top <= LOG_MAX_TOP:
            raise bad(f"$top must be 1 to {LOG_MAX_TOP}", "InvalidParameter")
        order = query.get("$order", "asc")
        if order not in ("asc", "desc"):
            raise bad("$order must be asc or desc", "InvalidParameter")
        try:
            end = parse_time(query["end"]) if query.get("end") else now()
            start = parse_time(query["start"]) if query.get("start") else end - timedelta(hours=1)
        except ValueError:
            raise bad(
                "start and end must be RFC 3339 times, e.g. 2024-05-19T00:00:14Z",
                "InvalidParameter",
            ) from None
        records = []
        lines: list[str] = []
        path = self.path(dep_id)
        with self._locks[dep_id], contextlib.suppress(OSError):
            lines = path.read_text(encoding="utf-8").splitlines()
        for raw in lines:
            with contextlib.suppress(ValueError, KeyError):
                item = json.loads(raw)
                if start <= parse_time(item["timestamp"]) <= end:
                    records.append(item)
        if order == "desc":
            records.reverse()
        return {"data": {"result": records[:top]}}
