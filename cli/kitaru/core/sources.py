"""What a flow's source snapshot may hold, and how it is packed into one ConfigMap.

`kitaru deploy` ships the flow's project as one immutable ConfigMap: every file under
`source_key(path)` (UTF-8 text in `data`, anything else base64 in `binaryData`) and the
manifest (`source_manifest`: one `sha256  path` line per file) under
`SOURCE_MANIFEST_KEY`. The runner reads the paths from the manifest, checks it against
the version's sha256 and each file against its line, so the file list never travels in
an environment variable or in the FlowDeployment.

The limits are the API server's and etcd's, measured on the local cluster
(docs/ARCHITECTURE.md, "Source snapshots"):

- the file data (the values of `data` and `binaryData`, the manifest included) may hold
  at most 1 MiB: the API server refuses a bigger ConfigMap;
- the whole object as stored must fit etcd's request limit (1.5 MiB by default): the
  keys count there too (about 8 bytes of framing each besides), so many files with long
  names can pass the first limit and still fail this one ("etcdserver: request is too
  large");
- a key holds only letters, digits, `-`, `_` and `.` (at most 253 characters), so a path
  may only use those and `/`; keys must be distinct (`a/b.py` and `a__b.py` would not be).

Past a limit nothing is created: the client refuses with the biggest files named.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping

from kitaru.core.jobs import SOURCE_MANIFEST_KEY, source_key, source_manifest
from kitaru.core.names import shown

MIB = 1024 * 1024
# The API server's bound on a ConfigMap's data and binaryData values, added up
# (core.MaxSecretSize in k8s.io/kubernetes/pkg/apis/core/validation).
DATA_LIMIT = MIB
# etcd's default --max-request-bytes: the stored object (protobuf) must fit one request.
ETCD_REQUEST_LIMIT = MIB + MIB // 2
# Measured (docs/ARCHITECTURE.md): etcd refuses once the values, the keys and about 8
# bytes per key reach its limit; the estimate takes twice that per key ...
STORED_BYTES_PER_FILE = 16
# ... and this for the object's metadata (name, labels, annotations, managedFields), with
# room to spare.
STORED_METADATA_BYTES = 16 * 1024
KEY_MAX_LENGTH = 253
KEY_PATTERN = re.compile(r"[-._a-zA-Z0-9]+")
PATH_PATTERN = re.compile(r"[-._a-zA-Z0-9]+(/[-._a-zA-Z0-9]+)*")
# How many of the biggest files a refusal names.
BIGGEST_NAMED = 5
KITARUIGNORE = ".kitaruignore"
LATER = "large sources will move to the run-data store once it exists"


class InvalidSource(ValueError):
    """A project that cannot be shipped as a source snapshot; the message names the fix."""

    reason = "InvalidSource"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SourceTooLarge(InvalidSource):
    reason = "SourceTooLarge"


def path_problem(path: str) -> str | None:
    """Why the project file `path` (relative, '/'-separated) cannot be a ConfigMap key."""
    if not PATH_PATTERN.fullmatch(path) or any(part in (".", "..") for part in path.split("/")):
        return "a ConfigMap key holds only letters, digits, '-', '_' and '.' (and '/' here)"
    key = source_key(path)
    if len(key) > KEY_MAX_LENGTH:
        return f"its key {key[:40]}… is {len(key)} characters; a ConfigMap key holds at most 253"
    if key.startswith(".."):
        return "a ConfigMap key cannot start with '..'"
    return None


def _size(n: int) -> str:
    if n >= MIB:
        return f"{n / MIB:.1f} MiB"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n} bytes"


def _biggest(sizes: Mapping[str, int]) -> str:
    ranked = sorted(sizes, key=lambda p: (-sizes[p], p))[:BIGGEST_NAMED]
    return ", ".join(f"{shown(path)} ({_size(sizes[path])})" for path in ranked)


def manifest_size(paths: Iterable[str]) -> int:
    """Bytes of `source_manifest` over these paths (a digest, two spaces, the path, '\\n')."""
    return sum(64 + 2 + len(path.encode()) + 1 for path in paths)


def data_size(sizes: Mapping[str, int]) -> int:
    """What the API server counts: every file and the manifest."""
    return sum(sizes.values()) + manifest_size(sizes)


def stored_size(sizes: Mapping[str, int]) -> int:
    """An upper estimate of the ConfigMap as etcd stores it (values, keys, framing)."""
    keys = [source_key(path) for path in sizes] + [SOURCE_MANIFEST_KEY]
    return (
        data_size(sizes)
        + sum(len(key) for key in keys)
        + STORED_BYTES_PER_FILE * len(keys)
        + STORED_METADATA_BYTES
    )


def check_source(sizes: Mapping[str, int]) -> None:
    """Refuse a snapshot (file sizes by path) that cannot be one ConfigMap: a path that
    cannot be a key, two paths with one key, or data past the API server's or etcd's
    limit. Checked on sizes, so nothing is read when the project is too big."""
    owners = {SOURCE_MANIFEST_KEY: "the manifest"}
    for path in sorted(sizes):
        problem = path_problem(path)
        if problem:
            raise InvalidSource(
                f"cannot ship {shown(path)}: {problem}; rename it or list it in {KITARUIGNORE}"
            )
        key = source_key(path)
        if key in owners:
            raise InvalidSource(
                f"cannot ship both {shown(owners[key])} and {shown(path)}: both would be stored "
                f"under the ConfigMap key {shown(key)} ('/' becomes '__'); rename one or list "
                f"it in {KITARUIGNORE}"
            )
        owners[key] = path
    data = data_size(sizes)
    if data > DATA_LIMIT:
        raise SourceTooLarge(
            f"the project's source is {_size(data)} ({data:,} bytes with its manifest); a "
            f"ConfigMap holds at most 1 MiB ({DATA_LIMIT:,} bytes). Biggest files: "
            f"{_biggest(sizes)}. List what the flow does not need in {KITARUIGNORE} at the "
            f"project root (gitignore syntax); {LATER}"
        )
    stored = stored_size(sizes)
    if stored > ETCD_REQUEST_LIMIT:
        raise SourceTooLarge(
            f"the project's {len(sizes):,} files would be stored as about {_size(stored)} "
            f"with their names; etcd takes at most 1.5 MiB ({ETCD_REQUEST_LIMIT:,} bytes) in "
            f"one object. List what the flow does not need in {KITARUIGNORE} at the "
            f"project root (gitignore syntax); {LATER}"
        )


def config_map_payload(files: Mapping[str, bytes]) -> tuple[dict[str, str], dict[str, str]]:
    """(`data`, `binaryData`) of the source ConfigMap: UTF-8 files as text, the others
    base64, and the manifest; keys per `source_key`."""
    data = {SOURCE_MANIFEST_KEY: source_manifest(files)}
    binary: dict[str, str] = {}
    for path in sorted(files):
        content = files[path]
        try:
            data[source_key(path)] = content.decode("utf-8")
        except UnicodeDecodeError:
            binary[source_key(path)] = base64.b64encode(content).decode("ascii")
    return data, binary
