"""Resumable, verified HTTP downloads with the standard library.

Every file is fetched to ``<name>.part`` next to its destination, resumed with an HTTP ``Range``
request when a connection drops (within one run, and across runs since the ``.part`` file stays),
checked against its known size and sha256/md5, and only then renamed into place. A failed check
deletes the partial file, so a destination never holds unverified bytes.

Credentials travel only in headers (``RemoteFile.headers``), are sent only to the origin they were
meant for (never across a redirect to another host, such as a CDN), never over plain http except
to this machine (:func:`check_token_transport`; loopback test servers and local mirrors stay
usable), and never appear in a log line, a progress bar or an error message: URLs are logged
without their query string.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import logging
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from tqdm.auto import tqdm

from data_download.errors import (
    AccessDeniedError,
    ChecksumError,
    DestinationError,
    DownloadError,
    InsecureTransportError,
    RemoteNotFoundError,
)

log = logging.getLogger("data_download")

CHUNK_BYTES = 1 << 20
USER_AGENT = "cagcl-mini-data-download/0.1"
# Network failures worth a retry; HTTP errors are mapped explicitly below.
_TRANSIENT = (ConnectionError, TimeoutError, http.client.HTTPException, urllib.error.URLError)


@dataclass
class RemoteFile:
    """One file to fetch: where from, where to, and what it must look like when done."""

    url: str
    dest: Path
    name: str  # shown in progress bars, logs and errors (a relative path, never a URL with secrets)
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:  # the URL's query may hold a token or a signature
        return (
            f"RemoteFile(url={redact_url(self.url)!r}, dest={str(self.dest)!r}, name={self.name!r}, "
            f"size={self.size}, sha256={self.sha256}, md5={self.md5})"
        )


class _Interrupted(Exception):
    """A transfer ended early or the server hiccupped; the caller retries from the .part file."""


def redact_url(url: str) -> str:
    """The URL without user info or query string, which may carry tokens or signatures."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "…" if parts.query else "", ""))


def is_loopback(url: str) -> bool:
    """Whether ``url`` points at this machine: localhost, 127.0.0.0/8 or ::1."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return False


def check_token_transport(url: str, token_name: str, remedy: str = "") -> None:
    """Refuse (InsecureTransportError) to send the token ``token_name`` to ``url`` over plain http.

    Plain http is allowed only to this machine (:func:`is_loopback`); anywhere else anyone on the
    network path could read the token. ``remedy`` adds what else the user may do.
    """
    if urlsplit(url).scheme.lower() == "http" and not is_loopback(url):
        raise InsecureTransportError(
            f"refusing to send {token_name} over plain http to {redact_url(url)}: anyone on the "
            "network could read it; use an https:// URL (plain http is accepted only for this "
            f"machine: localhost, 127.0.0.0/8, ::1){remedy}"
        )


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


class _SameOriginAuthRedirect(urllib.request.HTTPRedirectHandler):
    """Follow redirects, re-sending Authorization only when the new URL has the same origin."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        auth = req.unredirected_hdrs.get("Authorization")
        if new is not None and auth and _origin(req.full_url) == _origin(newurl):
            new.add_unredirected_header("Authorization", auth)
        return new


_OPENER = urllib.request.build_opener(_SameOriginAuthRedirect)


def _open(url: str, headers: Mapping[str, str], *, method: str = "GET", timeout: float = 60.0):
    if any(key.lower() == "authorization" for key in headers):
        check_token_transport(url, "credentials (an Authorization header)")
    req = urllib.request.Request(url, method=method)
    req.add_header("User-Agent", USER_AGENT)
    for key, value in headers.items():
        if key.lower() == "authorization":  # not copied by urllib onto a redirected request
            req.add_unredirected_header("Authorization", value)
        else:
            req.add_header(key, value)
    try:
        return _OPENER.open(req, timeout=timeout)
    except urllib.error.URLError as err:  # a file:// mirror without the file: not transient
        if not isinstance(err, urllib.error.HTTPError) and isinstance(
            err.reason, FileNotFoundError
        ):
            raise RemoteNotFoundError(f"not found: {redact_url(url)}") from None
        raise


def _raise_for_status(err: urllib.error.HTTPError, name: str, url: str) -> None:
    """Turn an HTTP error into one of our errors; 429 and 5xx become retryable interruptions."""
    code = err.code
    err.close()
    where = f"{name} ({redact_url(url)})"
    if code in (401, 403):
        raise AccessDeniedError(f"access denied ({code}) to {where}", status=code)
    if code in (404, 410):
        raise RemoteNotFoundError(f"not found ({code}): {where}")
    if code == 429 or code >= 500:
        raise _Interrupted(f"server answered {code} for {where}")
    raise DownloadError(f"server answered {code} {err.reason} for {where}")


def remote_size(
    url: str, headers: Mapping[str, str] | None = None, *, name: str = "", timeout: float = 30.0
) -> int | None:
    """The size the server announces for ``url`` (HEAD request), or None if it does not say."""
    name = name or redact_url(url)
    try:
        with _open(
            url, {**(headers or {}), "Accept-Encoding": "identity"}, method="HEAD", timeout=timeout
        ) as resp:
            length = resp.headers.get("Content-Length")
    except urllib.error.HTTPError as err:
        try:
            _raise_for_status(err, name, url)
        except _Interrupted as exc:
            raise DownloadError(str(exc)) from None
    except _TRANSIENT as exc:
        raise DownloadError(f"cannot reach {redact_url(url)} for {name}: {exc}") from None
    return int(length) if length is not None and length.isdigit() else None


def get_json(
    url: str,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    *,
    name: str = "",
    timeout: float = 60.0,
    retries: int = 3,
    backoff: float = 1.0,
) -> Any:
    """GET a small JSON document (an API listing), with the same error mapping as downloads."""
    full = f"{url}?{urlencode(params)}" if params else url
    name = name or redact_url(url)
    for attempt in range(retries + 1):
        try:
            with _open(
                full, {**(headers or {}), "Accept": "application/json"}, timeout=timeout
            ) as resp:
                return json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as err:
            try:
                _raise_for_status(err, name, full)
            except _Interrupted as exc:
                problem: Exception = exc
        except _TRANSIENT as exc:
            problem = exc
        except json.JSONDecodeError as exc:
            raise DownloadError(f"{name}: the server's answer is not JSON ({exc})") from None
        if attempt < retries:
            log.warning("%s: %s; retrying", name, problem)
            time.sleep(backoff * 2**attempt)
    raise DownloadError(f"cannot fetch {name} from {redact_url(url)}: {problem}")


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(start, total) from a ``Content-Range: bytes a-b/total`` or ``bytes */total`` header."""
    if not value or not value.startswith("bytes"):
        return None, None
    spec, _, total = value[5:].strip().partition("/")
    start = int(spec.split("-")[0]) if spec and spec != "*" else None
    return start, (int(total) if total.isdigit() else None)


def _fetch_once(item: RemoteFile, part: Path, offset: int, bar: tqdm, timeout: float) -> bool:
    """Fetch from ``offset`` into ``part``. True when the server's announced length arrived."""
    headers = {**item.headers, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = _open(item.url, headers, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            _, total = _content_range(err.headers.get("Content-Range"))
            err.close()
            if total == offset:
                return True  # the .part file already holds every byte
            part.unlink(missing_ok=True)
            raise _Interrupted("the server cannot resume this file; starting over") from None
        _raise_for_status(err, item.name, item.url)
    with resp:
        if resp.status == 206:
            start, _ = _content_range(resp.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Interrupted(
                    f"the server resumed at byte {start}, not {offset}; starting over"
                )
            mode = "ab"
        else:
            if offset:
                log.info("%s: the server ignored the range request; starting over", item.name)
                bar.reset(total=item.size)
            offset, mode = 0, "wb"
        length = resp.headers.get("Content-Length")
        expected = offset + int(length) if length is not None and length.isdigit() else item.size
        written = offset
        with open(part, mode) as fh:
            while chunk := resp.read(CHUNK_BYTES):
                fh.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
    return expected is None or written >= expected


def _digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK_BYTES):
            h.update(block)
    return h.hexdigest()


def verify(item: RemoteFile, path: Path) -> None:
    """Check ``path`` against the known size and hashes of ``item``; raise ChecksumError if not."""
    size = path.stat().st_size
    if item.size is not None and size != item.size:
        raise ChecksumError(f"{item.name}: expected {item.size} bytes, got {size}")
    for algorithm, expected in (("sha256", item.sha256), ("md5", item.md5)):
        if expected:
            got = _digest(path, algorithm)
            if got.lower() != expected.lower():
                raise ChecksumError(
                    f"{item.name}: {algorithm} mismatch: expected {expected.lower()}, got {got}"
                )


def download(
    item: RemoteFile,
    *,
    progress: bool = True,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
) -> str:
    """Fetch ``item`` into place; "present" when a verified copy was already there, else "fetched".

    Resumes from ``<dest>.part``; retries dropped connections up to ``retries`` times with
    exponential ``backoff`` seconds. A size or hash mismatch deletes the partial file and raises
    ChecksumError; 401/403 raise AccessDeniedError; 404/410 raise RemoteNotFoundError.
    """
    dest = Path(item.dest)
    if dest.is_file():
        try:
            verify(item, dest)
            return "present"
        except ChecksumError as exc:
            log.warning(
                "%s: the existing file fails its check (%s); fetching it again", item.name, exc
            )
            dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    bar = tqdm(
        total=item.size,
        initial=start,
        desc=item.name,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not progress,
        leave=False,
    )
    failures = 0
    with bar:
        while True:
            offset = part.stat().st_size if part.exists() else 0
            if item.size is not None and offset > item.size:
                part.unlink()
                offset = 0
            if item.size is not None and offset == item.size:
                break
            try:
                if _fetch_once(item, part, offset, bar, timeout):
                    break
                raise _Interrupted("the connection closed before the whole file arrived")
            except (_Interrupted, *_TRANSIENT) as exc:
                failures += 1
                held = part.stat().st_size if part.exists() else 0
                if failures > retries:
                    raise DownloadError(
                        f"{item.name}: giving up after {failures} interrupted attempts ({exc}); "
                        f"{held} bytes are kept in {part}, run the command again to resume"
                    ) from None
                log.warning("%s: %s; resuming from byte %d", item.name, exc, held)
                time.sleep(backoff * 2 ** (failures - 1))
    try:
        verify(item, part)
    except ChecksumError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return "fetched"


def ensure_writable(dest: Path, *, create: bool = True) -> Path:
    """Check up front that ``dest`` can hold downloads (creating it when ``create``).

    Raises DestinationError naming the folder and the reason, e.g. a parent that is a file or a
    folder without write permission, rather than failing halfway through a download.
    """
    dest = Path(dest).expanduser()
    probe = dest
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise DestinationError(f"cannot write to {dest}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DestinationError(f"cannot write to {dest}: no write permission on {probe}")
    if create:
        try:
            dest.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=dest, prefix=".write-test-"):
                pass
        except OSError as exc:
            raise DestinationError(f"cannot write to {dest}: {exc.strerror or exc}") from None
    return dest


def ensure_free_space(dest: Path, needed: int) -> None:
    """Raise DestinationError when the file system of ``dest`` has less than ``needed`` bytes."""
    probe = Path(dest)
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise DestinationError(
            f"not enough space in {dest}: the download needs {format_bytes(needed)}, "
            f"{format_bytes(free)} are free"
        )


def format_bytes(n: int | None) -> str:
    """Human-readable size: 1.5 GB, 320.0 kB; "size unknown" for None."""
    if n is None:
        return "size unknown"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"  # pragma: no cover
