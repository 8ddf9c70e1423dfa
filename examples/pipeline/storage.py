"""Where the pipeline reads and writes: an S3 bucket or a local directory, one interface.

A "bucket" field holding a bare name (``my-bucket``) or ``s3://my-bucket`` means S3; one
holding a path (``/data``, ``./data``, ``file:///data``: anything with a ``/``, which S3
bucket names cannot contain) means a local directory. Keys are ``/``-separated in both.
The S3 client honours ``AWS_ENDPOINT_URL`` (boto3 reads it), so an emulator works too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol


class Storage(Protocol):
    """Keys under a root: list (all pages), sizes, read, write."""

    def list(self, prefix: str) -> list[str]: ...
    def sizes(self, prefix: str) -> dict[str, int]: ...
    def read(self, key: str) -> bytes: ...
    def write(self, key: str, data: bytes) -> None: ...
    def describe(self, key: str) -> str: ...


def join_key(*parts: str) -> str:
    """Join key parts with single slashes, ignoring empty parts."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def run_prefix(result_path: str) -> str:
    """The run's listing prefix WITH the trailing slash, so run ``1`` never swallows ``10``."""
    path = result_path.strip("/")
    return f"{path}/" if path else ""


class LocalStorage:
    """A directory standing in for a bucket."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        path = (self.root / key.lstrip("/")).resolve()
        root = self.root.resolve()
        if path != root and root not in path.parents:
            raise ValueError(f"key {key!r} escapes the storage root {self.root}")
        return path

    def list(self, prefix: str) -> list[str]:
        """Every file key starting with ``prefix`` (string prefix, like S3)."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"local storage directory {self.root} does not exist")
        directory = prefix.rpartition("/")[0]
        base = self.root / directory if directory else self.root
        if not base.is_dir():
            return []
        keys = []
        for path in base.rglob("*"):
            if path.is_file():
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def sizes(self, prefix: str) -> dict[str, int]:
        """Bytes of every file key starting with ``prefix``."""
        return {key: (self.root / key).stat().st_size for key in self.list(prefix)}

    def read(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # readers never see half a file

    def describe(self, key: str) -> str:
        return str(self.root / key)


class S3Storage:
    """One S3 bucket; listings follow every page (S3 returns at most 1000 keys a page)."""

    def __init__(self, bucket: str, client: Any | None = None) -> None:
        self.bucket = bucket
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3  # deferred: only S3 runs need boto3 (Lambda runtimes ship it)

            self._client = boto3.client("s3")
        return self._client

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys

    def sizes(self, prefix: str) -> dict[str, int]:
        """Bytes of every key under ``prefix``, from the listing (no request per key)."""
        out: dict[str, int] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            out.update((obj["Key"], int(obj["Size"])) for obj in page.get("Contents", []))
        return out

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def write(self, key: str, data: bytes) -> None:
        content_type = "application/json" if key.endswith(".json") else "binary/octet-stream"
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


def is_local(bucket: str) -> bool:
    return bucket.startswith("file://") or ("/" in bucket and not bucket.startswith("s3://"))


def open_storage(bucket: str, client: Any | None = None) -> Storage:
    """The storage a payload's ``bucket``/``data_bucket`` field names."""
    if bucket.startswith("file://"):
        return LocalStorage(bucket[len("file://") :])
    if is_local(bucket):
        return LocalStorage(bucket)
    name = bucket[len("s3://") :] if bucket.startswith("s3://") else bucket
    name = name.strip("/")
    if not name or "/" in name:
        raise ValueError(
            f"{bucket!r} is not a bucket: give a bucket name, s3://bucket, or a local path "
            "(put key prefixes in data_prefix/result_path)"
        )
    return S3Storage(name, client)
