"""The cold store's backends through obstore: a local directory or an S3-compatible bucket.

obstore (Rust object_store) gives one API for both, with multipart, retries and path-style
endpoints for MinIO/Ceph/moto. Local puts are additionally fsynced so that "uploaded" means
on disk, as it does for S3 once the PUT returns.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import obstore
from obstore.store import LocalStore, S3Store

from sealstream.settings import ObjectStoreSettings


@dataclass(frozen=True)
class ObjectInfo:
    path: str
    size: int


class ObjectStore:
    """put/get/list/delete on one bucket or directory."""

    def __init__(self, settings: ObjectStoreSettings) -> None:
        self.settings = settings
        parsed = urlparse(settings.url)
        self.local_root: Path | None = None
        self._store: Any
        if parsed.scheme == "s3":
            options: dict[str, Any] = {
                "region": settings.region,
                "virtual_hosted_style_request": not settings.path_style,
            }
            if settings.endpoint:
                options["endpoint"] = settings.endpoint
            if settings.access_key_id:
                options["access_key_id"] = settings.access_key_id
            if settings.secret_access_key is not None:
                options["secret_access_key"] = settings.secret_access_key.get_secret_value()
            if settings.session_token is not None:
                options["session_token"] = settings.session_token.get_secret_value()
            self._store = S3Store(
                parsed.netloc,
                prefix=parsed.path.strip("/") or None,
                client_options={"allow_http": settings.allow_http, "timeout": "30s"},
                **options,
            )
            self.description = f"s3://{parsed.netloc}/{parsed.path.strip('/')}"
        elif parsed.scheme in ("", "file"):
            root = Path(parsed.path if parsed.scheme == "file" else settings.url).resolve()
            root.mkdir(parents=True, exist_ok=True)
            self.local_root = root
            self._store = LocalStore(root, mkdir=True)
            self.description = str(root)
        else:
            raise ValueError(
                f"unsupported object store URL {settings.url!r}: use a directory, "
                "file:///dir or s3://bucket[/prefix]"
            )

    def put(self, path: str, data: bytes) -> None:
        obstore.put(self._store, path, data)
        if self.local_root is not None:
            _fsync(self.local_root / path)

    def get(self, path: str) -> bytes:
        return bytes(obstore.get(self._store, path).bytes())

    def exists(self, path: str) -> bool:
        try:
            obstore.head(self._store, path)
        except FileNotFoundError:
            return False
        return True

    def listing(self, prefix: str | None = None) -> Iterator[ObjectInfo]:
        for chunk in obstore.list(self._store, prefix=prefix):
            for meta in chunk:
                yield ObjectInfo(str(meta["path"]), int(meta["size"]))

    def delete(self, paths: list[str]) -> None:
        if paths:
            obstore.delete(self._store, paths)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
