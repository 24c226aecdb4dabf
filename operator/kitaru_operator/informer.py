"""List-then-watch of one kind into a sink of slim records, with a "synced" signal.

Why not kopf indexes: kopf holds every handler of every kind until each object of
each indexed kind has been indexed, and its readiness toggles wake every waiting
object on each change — quadratic in the objects at start-up (10 000 finished
invocations: nothing dispatched for minutes). An informer knows when its list is
complete (`synced`), keeps only what the sink's projection keeps, and can select on
the server (label and field selectors) so that it never sees what it does not need.

The list is paged (`limit`/`continue`), each page decoded into slim models
(`objects`: only the fields the projection reads), projected and dropped, so memory
stays at one page plus the sink's records. A watch that ends is resumed
from the last resourceVersion seen (bookmarks keep it fresh); an expired one (410)
lists again and tells the sink which keys vanished meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, Iterable
from typing import Generic, Protocol, TypeVar

import aiohttp
from kitaru.core.backoff import Backoff
from pydantic import TypeAdapter, ValidationError

from kitaru_operator.kube import ApiError, AsyncKube, Kind, WatchExpired
from kitaru_operator.objects import Item, ObjectList, WatchEvent, validate_json

logger = logging.getLogger("kitaru_operator")

Key = tuple[str, str]  # (namespace, name)
T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


class Sink(Protocol[T_contra]):
    """Where an informer puts what it sees. Called on the event loop, never concurrently."""

    def upsert(self, key: Key, record: T_contra) -> None: ...

    def delete(self, key: Key, record: T_contra | None = None) -> None:
        """Forget a key; `record` is the object's last state when the watch gave one."""
        ...

    def keys(self, namespace: str | None) -> Iterable[Key]:
        """The keys held for one namespace (None: all), to find what a re-list lost."""
        ...


WATCH_RETRY = Backoff(base=0.5, cap=30)


class Informer(Generic[Item, T]):
    """Feeds `sink` with `project(item)` for each object of `kind` (in `namespace`, or
    all with None), where `item` is the slim model the JSON is decoded into."""

    def __init__(
        self,
        api: AsyncKube,
        kind: Kind,
        namespace: str | None,
        item: type[Item],
        project: Callable[[Item], T | None],
        sink: Sink[T],
        *,
        label_selector: str = "",
        field_selector: str = "",
        page_size: int = 500,
    ) -> None:
        self.api, self.kind, self.namespace = api, kind, namespace
        self.project, self.sink = project, sink
        self.label_selector, self.field_selector = label_selector, field_selector
        self.page_size = page_size
        self.pages: TypeAdapter[ObjectList[Item]] = TypeAdapter(ObjectList[item])  # type: ignore[valid-type]
        self.events: TypeAdapter[WatchEvent[Item]] = TypeAdapter(WatchEvent[item])  # type: ignore[valid-type]
        self.synced = asyncio.Event()

    def __repr__(self) -> str:
        scope = self.namespace or "all namespaces"
        selected = ",".join(filter(None, (self.label_selector, self.field_selector)))
        return f"{self.kind.plural} in {scope}" + (f" ({selected})" if selected else "")

    def _apply(self, event_type: str, item: Item) -> None:
        key = (item.metadata.namespace, item.metadata.name)
        record = self.project(item)
        if event_type == "DELETED" or record is None:
            self.sink.delete(key, record)
        else:
            self.sink.upsert(key, record)

    async def _list(self) -> str:
        """Put every object into the sink, drop what vanished; the list's resourceVersion."""
        seen: set[Key] = set()
        token = ""
        while True:
            raw = await self.api.list_raw(
                self.kind,
                self.namespace,
                limit=self.page_size,
                continue_token=token,
                label_selector=self.label_selector,
                field_selector=self.field_selector,
            )
            page = validate_json(self.pages, raw)
            del raw
            for item in page.items:
                seen.add((item.metadata.namespace, item.metadata.name))
                self._apply("ADDED", item)
            token = page.metadata.continue_
            await asyncio.sleep(0)  # let the dispatch path run between pages
            if not token:
                break
        for key in [k for k in self.sink.keys(self.namespace) if k not in seen]:
            self.sink.delete(key)
        return page.metadata.resource_version

    async def _watch(self, resource_version: str) -> str:
        """Apply one watch request's events; the resourceVersion to resume from."""
        async for line in self.api.watch(
            self.kind,
            self.namespace,
            resource_version,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
        ):
            event = validate_json(self.events, line)
            if event.type == "ERROR":
                status = json.loads(line)["object"]
                if status.get("code") == 410:
                    raise WatchExpired(self.kind.plural)
                raise ApiError(int(status.get("code") or 500), "WATCH", repr(self), line.decode())
            resource_version = event.object.metadata.resource_version or resource_version
            if event.type != "BOOKMARK":
                self._apply(event.type, event.object)
        return resource_version

    async def run(self) -> None:
        """Forever: list, then watch; back off on errors, list again when expired."""
        failures = 0
        resource_version = ""
        while True:
            try:
                if not resource_version:
                    resource_version = await self._list()
                    self.synced.set()
                    logger.debug("listed %r", self)
                resource_version = await self._watch(resource_version)
                failures = 0
            except WatchExpired:
                resource_version = ""
            except (ApiError, aiohttp.ClientError, TimeoutError, ValidationError) as exc:
                failures += 1
                delay = WATCH_RETRY.delay(failures, random.random())
                logger.warning("watching %r failed (%s); retrying in %.1fs", self, exc, delay)
                await asyncio.sleep(delay)
