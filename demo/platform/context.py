"""The app's explicit context: its configuration, its services, the running jobs, the upload ledger."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

from demo.platform.config import AppConfig
from demo.platform.fair import address_of
from demo.platform.jobs import Jobs
from demo.platform.services import Services
from demo.platform.uploads import UploadLedger


@dataclass
class AppContext:
    """What every tab's `build_tab(ctx, ...)` receives: the config and the services that own every
    model and cache. Components that one tab offers another are passed as explicit handles by
    app.py, never through this object.

    first_answer is set once a zero-shot request has been answered (the start-up warm-up waits for it).
    """

    config: AppConfig
    services: Services
    first_answer: threading.Event = field(default_factory=threading.Event)
    jobs: Jobs = field(default_factory=Jobs)  # running long requests, for the Stop buttons
    uploads: UploadLedger | None = None  # who uploaded which file, and how much (set by create)
    _tab_services: dict = field(default_factory=dict, repr=False)  # what tabs own, made once (see tab_service)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def tab_service(self, name: str, make: Callable[["AppConfig"], object]):
        """A service that one tab owns (the Train tab's runs), made once per context by make(config): the
        platform never imports a tab, and the service lives as long as the app's other services."""
        with self._lock:
            if name not in self._tab_services:
                self._tab_services[name] = make(self.config)
            return self._tab_services[name]

    @property
    def models(self):
        """The process-wide model cache (services.models)."""
        return self.services.models

    @classmethod
    def create(cls, config: AppConfig | None = None, loader=None) -> "AppContext":
        """A context with fresh services for `config` (from the environment by default)."""
        config = config or AppConfig.from_env()
        uploads = UploadLedger(config.upload_ttl_s, config.upload_mb_per_visitor, config.upload_total_mb)
        return cls(config=config, services=Services(config, loader), uploads=uploads)

    def check_own_uploads(self, request, *inputs) -> None:
        """Refuse files in these inputs (a path, a list of paths or FileData) that another address uploaded."""
        if self.uploads is None:
            return
        items = [x for value in inputs for x in (value if isinstance(value, (list, tuple)) else [value]) if x]
        self.uploads.check_own(address_of(request), items)
