"""The media store: where the photos and voices residents send are kept once copied out of WeChat, whose own
copies live only 3 days (storage/needs/media.py decides what is copied, when, and when to give up).

Two kinds, one interface (`put`, `get`, `url`, `close`), chosen by the settings (`open_media_store`):

- `FolderMediaStore` (the default): files under `STEWARD_MEDIA_DIR`. Enough for one server.
- `S3MediaStore`: an S3-compatible bucket (`STEWARD_MEDIA_S3_URL` and the bucket/key settings), when several
  servers share the media or the disk should not hold it. boto3 is synchronous: every call runs in a thread.

Keys are paths like ``needs/12/<token>.jpg``; the store never decides who may read them — the bot serves a
stored object only through its unguessable token (bot/app.py, ``/media/<token>``).
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from storage.settings import Settings

_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*")
# WeChat sends photos as JPEG and voices as AMR or Speex; mimetypes knows only some of these.
_EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "image/gif": ".gif", "audio/amr": ".amr",
               "voice/speex": ".speex", "audio/speex": ".speex", "audio/mpeg": ".mp3"}
_TYPES = {ext: kind for kind, ext in _EXTENSIONS.items()}


class MediaStoreError(Exception):
    """The store could not be written or read (disk full, bucket unreachable): worth trying again later."""


@dataclass(frozen=True)
class StoredObject:
    data: bytes
    content_type: str


def extension_for(content_type: str) -> str:
    """The file extension for a media type (``.bin`` when unknown), so a folder of media opens in any viewer."""
    kind = content_type.split(";", 1)[0].strip().lower()
    return _EXTENSIONS.get(kind) or mimetypes.guess_extension(kind) or ".bin"


def check_key(key: str) -> str:
    """Keys are relative paths of plain names: nothing that could climb out of the folder (``..``, ``/x``)."""
    if not _KEY.fullmatch(key) or len(key) > 256:
        raise ValueError(f"not a media key: {key!r}")
    return key


class MediaStore(Protocol):
    async def put(self, key: str, data: bytes, content_type: str) -> None: ...

    async def get(self, key: str) -> StoredObject | None: ...

    def url(self, key: str, expires_in: int = 3600) -> str | None: ...

    async def close(self) -> None: ...


class FolderMediaStore:
    """Files under one folder; the media type is read back from the file's extension."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Written aside and renamed: a reader never sees half a photo, a crash leaves no torn file.
            part = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
            part.write_bytes(data)
            os.replace(part, path)

        try:
            await asyncio.to_thread(write)
        except OSError as exc:
            raise MediaStoreError(f"cannot write {key}: {exc}") from exc

    async def get(self, key: str) -> StoredObject | None:
        path = self._path(key)
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise MediaStoreError(f"cannot read {key}: {exc}") from exc
        return StoredObject(data, _TYPES.get(path.suffix.lower()) or "application/octet-stream")

    def url(self, key: str, expires_in: int = 3600) -> str | None:
        return self._path(key).resolve().as_uri()

    async def close(self) -> None:
        return None


class S3MediaStore:
    """An S3-compatible bucket (AWS, MinIO, a cloud's object storage). Path-style addressing, so an endpoint on
    one host name (MinIO, an emulator) works as well as AWS."""

    def __init__(self, endpoint_url: str, bucket: str, *, key_id: str | None = None, secret: str | None = None,
                 region: str = "us-east-1") -> None:
        self.bucket = bucket
        self._client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, aws_access_key_id=key_id, aws_secret_access_key=secret,
            region_name=region,
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4", connect_timeout=5,
                          read_timeout=30, retries={"max_attempts": 3, "mode": "standard"}),
        )

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        try:
            await asyncio.to_thread(self._client.put_object, Bucket=self.bucket, Key=check_key(key), Body=data,
                                    ContentType=content_type)
        except Exception as exc:  # botocore's ClientError, endpoint and credential errors alike: try again later
            raise MediaStoreError(f"cannot store {key} in bucket {self.bucket}: {exc}") from exc

    async def get(self, key: str) -> StoredObject | None:
        def read() -> StoredObject | None:
            try:
                answer = self._client.get_object(Bucket=self.bucket, Key=check_key(key))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise
            with answer["Body"] as body:
                return StoredObject(body.read(), answer.get("ContentType") or "application/octet-stream")

        try:
            return await asyncio.to_thread(read)
        except Exception as exc:
            raise MediaStoreError(f"cannot read {key} from bucket {self.bucket}: {exc}") from exc

    def url(self, key: str, expires_in: int = 3600) -> str | None:
        """A presigned GET link, valid `expires_in` seconds (for a bucket staff's browsers can reach)."""
        return self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": check_key(key)}, ExpiresIn=expires_in
        )

    async def close(self) -> None:
        self._client.close()


def open_media_store(settings: Settings) -> MediaStore:
    """The store the settings name: the bucket when `STEWARD_MEDIA_S3_URL` is set, else the folder."""
    if settings.media_s3_url:
        return S3MediaStore(settings.media_s3_url, settings.media_s3_bucket, key_id=settings.media_s3_key_id,
                            secret=settings.media_s3_secret, region=settings.media_s3_region)
    return FolderMediaStore(settings.media_folder)
