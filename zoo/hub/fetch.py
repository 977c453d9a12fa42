"""A weight card's file, from mirror, URL or folder, to a verified local path.

Downloads stream into ``<file>.part`` while hashing, resume with an HTTP Range request,
retry with backoff on 5xx and network faults, and are renamed into place only when the
hash matches. An inter-process lock (``<file>.lock``) means two processes never fetch the
same file twice nor read a half-written one. Environment, read at call time:
``ZOO_HOME`` (cache root), ``ZOO_MIRROR`` (base URLs or folders tried first, separated by
commas or spaces), ``ZOO_OFFLINE=1`` (never touch the network), ``ZOO_TIMEOUT`` (seconds).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from zoo.errors import ChecksumError, FetchError, OfflineError
from zoo.hub.cards import WeightCard, zoo_home

CHUNK = 1 << 20


def cache_path(card: WeightCard) -> Path:
    return zoo_home() / "weights" / card.arch / card.tag / card.file_name


def file_hash(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _stamp(path: Path, algorithm: str, digest: str) -> str:
    st = path.stat()
    return f"{algorithm}:{digest}:{st.st_size}:{st.st_mtime_ns}"


def _marker(path: Path) -> Path:
    """Where the stamp of ``path`` lives: beside it in the cache, else under ZOO_HOME/stamps.

    Files outside the cache (shipped weights, mirrors, user paths) are never written beside.
    """
    cache = zoo_home() / "weights"
    resolved = path.resolve()
    if resolved.is_relative_to(cache.resolve()):
        return path.with_name(path.name + ".verified")
    key = hashlib.sha256(str(resolved).encode()).hexdigest()[:32]
    return zoo_home() / "stamps" / f"{key}.verified"


def is_verified(path: Path, card: WeightCard, rehash: bool = False) -> bool:
    """True when ``path`` holds the card's bytes. A stamp file spares re-hashing an unchanged file."""
    algorithm, digest = card.hash
    if not path.is_file():
        return False
    marker = _marker(path)
    if not rehash and marker.is_file() and marker.read_text() == _stamp(path, algorithm, digest):
        return True
    if card.size is not None and path.stat().st_size != card.size:
        return False
    if not file_hash(path, algorithm).startswith(digest.lower()):  # a card's sha256_prefix: its leading digits
        return False
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(_stamp(path, algorithm, digest))
    except OSError:  # a read-only cache only costs a re-hash next time
        pass
    return True


def _mirrors() -> list[str]:
    raw = os.environ.get("ZOO_MIRROR", "")
    return [m for m in raw.replace(";", ",").replace(" ", ",").split(",") if m]


def sources(card: WeightCard) -> list[str]:
    """Every place the file may be, in the order tried: mirrors first, then the card's URLs."""
    out = []
    for mirror in _mirrors():
        sep = "" if mirror.endswith("/") else "/"
        out.append(f"{mirror}{sep}{card.file_name}" if "://" in mirror else str(Path(mirror) / card.file_name))
    return out + card.resolved_urls()


def _local(source: str) -> Path | None:
    parsed = urlparse(source)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme in ("http", "https"):
        return None
    return Path(source).expanduser()


class _Progress:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, name: str, total: int | None, done: int, enabled: bool):
        self.name, self.total, self.done, self.enabled = name, total, done, enabled
        self.last = 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self.last > 0.1 or self.done == self.total):
            self.last = now
            mb = self.done / 1e6
            if self.total:
                frac = self.done / self.total
                bar = "#" * int(30 * frac)
                sys.stderr.write(f"\r{self.name}: [{bar:<30}] {100 * frac:5.1f}% {mb:.1f} MB")
            else:
                sys.stderr.write(f"\r{self.name}: {mb:.1f} MB")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


class _Retryable(Exception):
    pass


def _download_once(url: str, part: Path, algorithm: str, timeout: float, progress: bool, expect: int | None) -> str:
    """One HTTP attempt, resuming ``part``; returns the hex digest of the complete file."""
    have = part.stat().st_size if part.exists() else 0
    if expect is not None and have > expect:
        part.unlink()
        have = 0
    headers = {"User-Agent": "medzoo"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416:  # the part file is already complete (or bad): start over
            part.unlink(missing_ok=True)
            raise _Retryable(f"HTTP 416 for a resume at byte {have}") from None
        if e.code >= 500 or e.code == 429:
            raise _Retryable(f"HTTP {e.code}") from None
        raise FetchError(f"{url} answered HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
        raise _Retryable(f"{type(e).__name__}: {getattr(e, 'reason', e)}") from None
    with response:
        h = hashlib.new(algorithm)
        if have and response.status == 206:
            with open(part, "rb") as f:
                while block := f.read(CHUNK):
                    h.update(block)
            mode = "ab"
        else:
            have, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else expect
        bar = _Progress(Path(part.name).stem, total, have, progress)
        written = have
        try:
            with open(part, mode) as f:
                while True:
                    block = response.read1(CHUNK)  # what has arrived, so a stall keeps it
                    if not block:
                        break
                    h.update(block)
                    f.write(block)
                    written += len(block)
                    bar.update(len(block))
        except (TimeoutError, ConnectionError, http.client.HTTPException, urllib.error.URLError) as e:
            raise _Retryable(f"{type(e).__name__} after {written} bytes") from None
        finally:
            bar.close()
    if total is not None and written < total:
        raise _Retryable(f"connection closed after {written} of {total} bytes")
    return h.hexdigest()


def _download(url: str, dest: Path, card: WeightCard, timeout: float, retries: int, backoff: float,
              progress: bool) -> None:
    algorithm, digest = card.hash
    part = dest.with_name(dest.name + ".part")
    reasons = []
    for attempt in range(retries + 1):
        try:
            got = _download_once(url, part, algorithm, timeout, progress, card.size)
        except _Retryable as e:
            reasons.append(str(e))
            if attempt < retries:
                time.sleep(backoff * 2**attempt)
            continue
        if not got.startswith(digest.lower()):
            part.unlink(missing_ok=True)
            raise ChecksumError(
                f"{url} gave a file whose {algorithm} is {got}, not {digest} as card {card.name} "
                f"({card.card_path}) says. The file was discarded; check the URL or the mirror's copy.")
        os.replace(part, dest)
        _marker(dest).write_text(_stamp(dest, algorithm, digest))
        return
    raise FetchError(f"{url}: gave up after {retries + 1} attempts ({'; '.join(reasons)}); "
                     f"the partial file {part} is kept and the next call resumes it.")


class _Lock:
    """An exclusive inter-process lock on ``path`` (released by the OS if the process dies)."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        import fcntl

        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def fetch(card: WeightCard, *, progress: bool | None = None, timeout: float | None = None,
          retries: int = 3, backoff: float = 0.5) -> Path:
    """The verified local path of ``card``'s file, downloading it if needed."""
    algorithm, digest = card.hash
    dest = cache_path(card)
    if progress is None:
        progress = sys.stderr.isatty()
    timeout = float(timeout or os.environ.get("ZOO_TIMEOUT", 60))
    failures: list[str] = []
    remote = []
    kind = FetchError
    for source in sources(card):
        local = _local(source)
        if local is None:
            remote.append(source)
        elif local.is_file():
            if is_verified(local, card):
                return local
            failures.append(f"{local}: {algorithm} does not match {digest}")
    if dest.is_file():
        if is_verified(dest, card):
            return dest
    if failures and (not remote or os.environ.get("ZOO_OFFLINE", "") not in ("", "0")):
        raise ChecksumError(
            f"the local copies of {card.name}'s weights do not match its card: {'; '.join(failures)}. "
            f"Replace them with the file whose {algorithm} is {digest}"
            + (f", or unset ZOO_OFFLINE to download it from {remote[0]}." if remote else "."))
    if os.environ.get("ZOO_OFFLINE", "") not in ("", "0"):
        raise OfflineError(
            f"ZOO_OFFLINE=1 and the weights of {card.name} are not cached. Place {card.file_name} "
            f"({algorithm} {'starting ' if card.sha256_prefix and not card.sha256 else ''}{digest}) at {dest}, or in a folder named by ZOO_MIRROR, or unset ZOO_OFFLINE "
            f"to download it from {card.urls[0]}.")
    if not remote:
        raise FetchError(f"no usable copy of {card.name}'s weights: "
                         f"{'; '.join(failures) or 'none of ' + ', '.join(sources(card)) + ' exists'}.")
    with _Lock(dest.with_name(dest.name + ".lock")):
        if dest.is_file():  # another process may have finished it while we waited
            if is_verified(dest, card):
                return dest
            dest.unlink()  # bytes that no longer match their hash are fetched again, never loaded
            _marker(dest).unlink(missing_ok=True)
        for url in remote:
            try:
                _download(url, dest, card, timeout, retries, backoff, progress)
                return dest
            except FetchError as e:
                failures.append(str(e))
                kind = type(e) if kind is FetchError and isinstance(e, ChecksumError) else kind
    raise kind(f"could not fetch the weights of {card.name}:\n  " + "\n  ".join(failures)
                     + f"\nFix the network or set ZOO_MIRROR to a folder or server holding {card.file_name}.")


def verify_cache() -> list[tuple[Path, bool]]:
    """Re-hash every cached file that has a card; bad ones are deleted. Returns (path, ok) pairs."""
    from zoo.hub.cards import all_cards

    results = []
    for card in all_cards().values():
        path = cache_path(card)
        if path.is_file():
            ok = is_verified(path, card, rehash=True)
            if not ok:
                path.unlink()
                _marker(path).unlink(missing_ok=True)
            results.append((path, ok))
    return results
