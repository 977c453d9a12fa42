"""A weight card's file, from mirror, URL or folder, to a verified local path.

Downloads stream into ``<file>.part`` while hashing, resume with an HTTP Range request
(whose ``Content-Range`` must start where the part file ends), retry with backoff on 5xx and
network faults, and are renamed into place only when the hash matches. A download is bounded:
it stops one byte past the card's ``size``, refuses a ``Content-Length`` that disagrees with
the card, and gives up on a connection slower than ``ZOO_MIN_RATE`` bytes per second over each
``ZOO_TIMEOUT`` window. An inter-process lock (``<file>.lock``) means two processes never fetch
the same file twice nor read a half-written one.

Integrity: every process hashes a file on its first use (in-process memo keyed by the file's
identity, size, mtime and ctime); nothing on disk lets a changed file skip the hash. Cards that
carry only torchvision's 8-hex-digit sha256 prefix get the full sha256 recorded beside the cached
file (``<file>.sha256``) at the first verified use, and checked from then on.

Every path the hub writes, replaces or deletes is checked lexically to lie inside ``ZOO_HOME``
(symlinks the user made inside it, such as ``weights/<arch>`` on another disk, keep working).

Environment, read at call time: ``ZOO_HOME`` (cache root), ``ZOO_MIRROR`` (base URLs or folders
tried first, separated by commas or semicolons), ``ZOO_OFFLINE=1`` (never touch the network),
``ZOO_TIMEOUT`` (seconds, default 60), ``ZOO_MIN_RATE`` (bytes per second, default 1024).
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

from zoo.errors import (
    CacheWriteError,
    CardError,
    ChecksumError,
    FetchError,
    InvalidArgumentError,
    OfflineError,
)
from zoo.hub.cards import WeightCard, get_card, zoo_home

CHUNK = 1 << 20
DEFAULT_TIMEOUT = 60.0
DEFAULT_MIN_RATE = 1024.0


def inside_home(path: str | os.PathLike, what: str = "cache path", sub: str = "") -> Path:
    """``path`` itself, after checking lexically (no symlinks followed) that it lies inside
    ZOO_HOME.

    ``sub`` narrows the check to one folder of ZOO_HOME (``weights`` for cache paths).
    """
    home = os.path.normpath(os.path.abspath(zoo_home() / sub))
    target = os.path.normpath(os.path.abspath(path))
    if target == home or os.path.commonpath([home, target]) != home:
        raise CardError(
            f"the {what} {path} lies outside ZOO_HOME ({home}); the zoo never writes or deletes "
            "there. Fix the weight card's arch, tag or filename (plain names only)."
        )
    return Path(path)


def cache_path(card: WeightCard) -> Path:
    return inside_home(
        zoo_home() / "weights" / card.arch / card.tag / card.file_name, sub="weights"
    )


def recorded_hash_path(card: WeightCard) -> Path:
    """Where the full sha256 of a prefix-only card is recorded at its first verified use."""
    path = cache_path(card)
    return path.with_name(path.name + ".sha256")


_DIGESTS: dict[tuple, str] = {}  # (identity of a file, algorithm) -> hex digest, this process only


def _identity(path: Path) -> tuple:
    st = os.stat(path)
    return os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def file_hash(path: Path, algorithm: str, *, memo: bool = True) -> str:
    """The hex digest of ``path``; hashed once per process while the file stays the same.

    The memo is keyed by inode, size, mtime and ctime (which no user call can set back), and lives
    in memory only, so each new process hashes the file on its first use.
    """
    key = (_identity(path), algorithm)
    if memo and key in _DIGESTS:
        return _DIGESTS[key]
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def recorded_sha256(card: WeightCard) -> str | None:
    """The full sha256 recorded for a prefix-only card, when there is one that fits its prefix."""
    if card.sha256 or card.md5 or not card.sha256_prefix:
        return None
    try:
        text = recorded_hash_path(card).read_text().strip().lower()
    except (OSError, UnicodeDecodeError):
        return None
    ok = re.fullmatch(r"[0-9a-f]{64}", text) and text.startswith(card.sha256_prefix.lower())
    return text if ok else None


def expected_hash(card: WeightCard) -> tuple[str, str, bool]:
    """(algorithm, digest, full): the card's hash, or a prefix-only card's recorded sha256."""
    algorithm, digest = card.hash
    if card.sha256 or card.md5:
        return algorithm, digest.lower(), True
    recorded = recorded_sha256(card)
    return ("sha256", recorded, True) if recorded else ("sha256", digest.lower(), False)


def _matches(got: str, digest: str, full: bool) -> bool:
    return got == digest if full else got.startswith(digest)


def _record(card: WeightCard, sha256: str) -> None:
    """Record the full sha256 of a prefix-only card (best effort: a read-only cache skips it)."""
    if card.sha256 or card.md5 or recorded_sha256(card):
        return
    target = recorded_hash_path(card)
    tmp = target.with_name(f".{os.getpid()}.{target.name}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(sha256 + "\n")
        os.replace(tmp, target)
    except OSError:  # unrecorded, the prefix still guards the file
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def is_verified(path: Path, card: WeightCard, rehash: bool = False) -> bool:
    """True when ``path`` holds the card's bytes (hashed once per process; ``rehash`` again)."""
    if not path.is_file():
        return False
    algorithm, digest, full = expected_hash(card)
    if card.size is not None and path.stat().st_size != card.size:
        return False
    got = file_hash(path, algorithm, memo=not rehash)
    if not _matches(got, digest, full):
        return False
    if not full:
        _record(card, got)
    return True


def mirrors() -> list[str]:
    """ZOO_MIRROR split at commas or semicolons (never at spaces: folder names may hold them)."""
    raw = os.environ.get("ZOO_MIRROR", "")
    return [m.strip() for m in raw.replace(";", ",").split(",") if m.strip()]


def sources(card: WeightCard) -> list[str]:
    """Every place the file may be, in the order tried: mirrors first, then the card's URLs."""
    out = []
    for mirror in mirrors():
        sep = "" if mirror.endswith("/") else "/"
        out.append(
            f"{mirror}{sep}{card.file_name}"
            if "://" in mirror
            else str(Path(mirror).expanduser() / card.file_name)
        )
    return out + card.resolved_urls()


def _local(source: str) -> Path | None:
    parsed = urlparse(source)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme in ("http", "https"):
        return None
    return Path(source).expanduser()


def _setting(name: str, given, default: float, unit: str) -> float:
    """A positive number from an argument or the environment, else a ZooError naming the fix."""
    raw = given if given is not None else os.environ.get(name) or default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = float("nan")
    if not value > 0 or value == float("inf"):
        source = (
            f"{name}={raw!r}" if given is None else f"{name.removeprefix('ZOO_').lower()}={raw!r}"
        )
        raise InvalidArgumentError(
            f"{source} is not a positive number of {unit}; set it to e.g. {default:g} or unset "
            f"{name}."
        )
    return value


# --- writing into the cache: every mutation goes through these, so tests can inject faults ---


def _open_part(path: Path, mode: str):
    return open(inside_home(path), mode)


def _write_block(f, block: bytes) -> None:
    f.write(block)


def _unlink(path: Path) -> None:
    os.unlink(inside_home(path))


def _replace(src: Path, dst: Path) -> None:
    os.replace(inside_home(src), inside_home(dst))


def _discard(path: Path) -> None:
    """Remove a part file; a missing one or a refusing cache is ignored (reported elsewhere)."""
    try:
        _unlink(path)
    except OSError:
        pass


def cache_error(
    e: OSError, folder: Path, card: WeightCard | None = None, doing: str = "write"
) -> CacheWriteError:
    """An OS error on the cache as a CacheWriteError that names the folder and the fix."""
    home = zoo_home()
    blocker = next((p for p in [Path(folder), *Path(folder).parents] if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        return CacheWriteError(
            f"cannot {doing} {folder}: {blocker} is a file, not a folder. Point ZOO_HOME (now "
            f"{home}) at a folder, or move that file away."
        )
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        need = f" (the file needs {card.size:,} bytes)" if card is not None and card.size else ""
        return CacheWriteError(
            f"no space left to {doing} {folder}{need}: free space on that disk, or set ZOO_HOME to "
            "a folder on a disk with room. The partial file was removed."
        )
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return CacheWriteError(
            f"cannot {doing} {folder}: it is read-only ({os.strerror(e.errno)}). Make it writable, "
            "or set ZOO_HOME to a writable folder; a read-only copy of the weights can be used "
            "through ZOO_MIRROR."
        )
    return CacheWriteError(
        f"cannot {doing} {folder}: {e.strerror or e}. Check the folder, or set ZOO_HOME to another "
        "folder."
    )


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
                frac = min(1.0, self.done / self.total)
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


class _Limits(NamedTuple):
    timeout: float  # seconds a read may wait, and the window over which min_rate is measured
    min_rate: float  # bytes per second
    expect: int | None  # the card's size


def _content_range_problem(
    header: str | None, have: int, length: int | None, expect: int | None
) -> str | None:
    m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", header or "")
    if not m:
        return f"no valid Content-Range ({header!r})"
    start, end, total = int(m[1]), int(m[2]), m[3]
    if start != have:
        return f"Content-Range {header!r} starts at byte {start}, not {have}"
    if length is not None and end - start + 1 != length:
        return f"Content-Range {header!r} disagrees with Content-Length {length}"
    if expect is not None and total != "*" and int(total) != expect:
        return f"Content-Range {header!r} gives a total other than the card's size {expect}"
    return None


def _download_once(url: str, part: Path, algorithm: str, progress: bool, limits: _Limits) -> str:
    """One HTTP attempt, resuming ``part``; returns the hex digest of the complete file."""
    expect = limits.expect
    have = part.stat().st_size if part.exists() else 0
    if expect is not None and have > expect:
        _unlink(part)
        have = 0
    response = _request(url, part, have, limits)
    with response:
        raw_length = response.headers.get("Content-Length")
        length = int(raw_length) if raw_length and raw_length.strip().isdigit() else None
        h = hashlib.new(algorithm)
        if have and response.status == 206:
            _hash_resumed(url, response, part, have, length, expect, h)
            mode = "ab"
        else:
            have, mode = 0, "wb"
        if expect is not None and length is not None and have + length != expect:
            raise FetchError(
                f"{url} announces {have + length:,} bytes (Content-Length) but the card says size "
                f"= {expect:,}: the URL serves another file, or the card is wrong. Nothing was "
                "kept."
            )
        total = have + length if length is not None else expect
        bar = _Progress(Path(part.name).stem, total, have, progress)
        try:
            f = _open_part(part, mode)
        except OSError as e:
            raise cache_error(e, part.parent, doing="write into") from None
        try:
            written = _stream_into(response, f, part, h, have, limits, bar)
        finally:
            bar.close()
    if expect is not None and written > expect:
        raise FetchError(
            f"{url} sent more than the card's size of {expect:,} bytes (stopped at {written:,}): "
            "the URL serves another file, or the card is wrong. Nothing was kept."
        )
    if total is not None and written < total:
        raise _Retryable(f"connection closed after {written} of {total} bytes")
    return h.hexdigest()


def _request(url: str, part: Path, have: int, limits: _Limits):
    """The open response for ``url`` from byte ``have`` on; transient failures are _Retryable."""
    headers = {"User-Agent": "medzoo"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        return urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=limits.timeout
        )
    except urllib.error.HTTPError as e:
        if e.code == 416:  # the part file is already complete (or bad): start over
            _discard(part)
            raise _Retryable(f"HTTP 416 for a resume at byte {have}") from None
        if e.code >= 500 or e.code == 429:
            raise _Retryable(f"HTTP {e.code}") from None
        raise FetchError(f"{url} answered HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
        raise _Retryable(f"{type(e).__name__}: {getattr(e, 'reason', e)}") from None


def _hash_resumed(url, response, part: Path, have: int, length, expect, h) -> None:
    """Check a 206 answer resumes at byte ``have``, then hash the bytes the part file holds."""
    problem = _content_range_problem(response.headers.get("Content-Range"), have, length, expect)
    if problem:
        _discard(part)
        raise _Retryable(
            f"{url} answered the resume at byte {have} with {problem}; the partial file was "
            "discarded and the download starts over"
        )
    with open(part, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)


def _stream_into(response, f, part: Path, h, have: int, limits: _Limits, bar) -> int:
    """Write the body into ``f``, the open ``part`` file (hashing it), stopping one byte past the
    card's size (which proves excess) and on a stall below ZOO_MIN_RATE; returns the bytes the
    part file holds."""
    # one byte past the card's size proves excess
    limit = None if limits.expect is None else limits.expect + 1
    written = have
    try:
        with f:
            window_start, window_bytes = time.monotonic(), 0
            while True:
                want = CHUNK if limit is None else min(CHUNK, limit - written)
                if want <= 0:
                    break
                block = response.read1(want)  # what has arrived, so a stall keeps it
                if not block:
                    break
                h.update(block)
                _write_block(f, block)
                written += len(block)
                window_bytes += len(block)
                bar.update(len(block))
                elapsed = time.monotonic() - window_start
                if elapsed >= limits.timeout:
                    _check_rate(window_bytes, elapsed, written, limits)
                    window_start, window_bytes = time.monotonic(), 0
    except (TimeoutError, ConnectionError, http.client.HTTPException, urllib.error.URLError) as e:
        raise _Retryable(f"{type(e).__name__} after {written} bytes") from None
    except FetchError:
        raise
    except OSError as e:
        raise cache_error(e, part.parent, doing="write into") from None
    return written


def _check_rate(window_bytes: int, elapsed: float, written: int, limits: _Limits) -> None:
    """A transfer slower than ZOO_MIN_RATE over the last ZOO_TIMEOUT seconds: a retryable stall."""
    if window_bytes < limits.min_rate * elapsed:
        raise _Retryable(
            f"slower than {limits.min_rate:g} bytes/s for {elapsed:.1f} s after {written:,} bytes "
            "(ZOO_MIN_RATE, ZOO_TIMEOUT)"
        )


def _download(url: str, dest: Path, card: WeightCard, retries: int, backoff: float, progress: bool,
              limits: _Limits) -> None:
    algorithm, digest, full = expected_hash(card)
    part = dest.with_name(dest.name + ".part")
    reasons = []
    for attempt in range(retries + 1):
        try:
            got = _download_once(url, part, algorithm, progress, limits)
        except _Retryable as e:
            reasons.append(str(e))
            if attempt < retries:
                time.sleep(backoff * 2**attempt)
            continue
        except FetchError:
            _discard(part)  # a failure that cannot resume leaves no junk behind
            raise
        if not _matches(got, digest, full):
            _discard(part)
            raise ChecksumError(
                f"{url} gave a file whose {algorithm} is {got}, not {digest} as "
                + (
                    f"card {card.name} ({card.card_path}) says"
                    if card.sha256 or card.md5
                    else f"recorded for {card.name} at its first verified download "
                    f"({recorded_hash_path(card)})"
                    if full
                    else f"card {card.name} ({card.card_path}) says"
                )
                + ". The file was discarded; check the URL or the mirror's copy."
            )
        try:
            _replace(part, dest)
        except OSError as e:
            raise cache_error(e, dest.parent, card, doing="write into") from None
        file_hash(dest, algorithm)  # remember the verified bytes for this process
        if not full:
            _record(card, got)
        return
    kept = part.exists()
    raise FetchError(
        f"{url}: gave up after {retries + 1} attempts ({'; '.join(reasons)}); "
        + (
            f"the partial file {part} is kept and the next call resumes it."
            if kept
            else "nothing was kept."
        )
    )


class _Lock:
    """An exclusive inter-process lock on ``path`` (released by the OS if the process dies)."""

    def __init__(self, path: Path):
        self.path = inside_home(path)

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


def _offline() -> bool:
    return os.environ.get("ZOO_OFFLINE", "") not in ("", "0")


def fetch(card: WeightCard | str, *, progress: bool | None = None, timeout: float | None = None,
          retries: int = 3, backoff: float = 0.5, min_rate: float | None = None) -> Path:
    """The verified local path of ``card``'s file, downloading it if needed.

    card: a WeightCard or its name ``arch.tag`` (zoo.fetch is this same function).

    timeout: seconds a read may wait (default ZOO_TIMEOUT or 60); min_rate: bytes per second the
    download must keep up over each ``timeout`` window (default ZOO_MIN_RATE or 1024).
    """
    card = get_card(card) if isinstance(card, str) else card
    expected = expected_hash(card)
    dest = cache_path(card)
    if progress is None:
        progress = sys.stderr.isatty()
    limits = _Limits(
        _setting("ZOO_TIMEOUT", timeout, DEFAULT_TIMEOUT, "seconds"),
        _setting("ZOO_MIN_RATE", min_rate, DEFAULT_MIN_RATE, "bytes per second"),
        card.size,
    )
    failures: list[str] = []
    remote: list[str] = []
    found = _verified_copy(card, expected, dest, failures, remote)
    if found is not None:
        return found
    _check_downloadable(card, expected, dest, failures, remote)
    found, kind = _download_locked(card, dest, remote, failures,
                                   retries=retries, backoff=backoff, progress=progress,
                                   limits=limits)
    if found is not None:
        return found
    used = mirrors()
    fix = (f"Fix the network, or check that the mirror(s) in ZOO_MIRROR ({', '.join(used)}) hold "
           f"{card.file_name}." if used else
           f"Fix the network or set ZOO_MIRROR to a folder or server holding {card.file_name}.")
    raise kind(
        f"could not fetch the weights of {card.name}:\n  " + "\n  ".join(failures) + "\n" + fix
    )


def _verified_copy(card: WeightCard, expected, dest: Path, failures: list[str], remote: list[str]):
    """A local source or the cache entry whose bytes match the card, else None; collects the
    remote sources into ``remote`` and each local copy that does not match into ``failures``."""
    algorithm, digest, _ = expected
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
        failures.append(
            f"the cached {dest}: {algorithm} does not match {digest} (changed or corrupt; it is "
            "fetched again, never loaded)"
        )
    return None


def _check_downloadable(card: WeightCard, expected, dest: Path, failures: list[str],
                        remote: list[str]) -> None:
    """Raise the error that says why nothing can be downloaded (bad local copies only, offline,
    no remote source); return when a download may be tried. ``expected`` is expected_hash(card)."""
    algorithm, digest, full = expected
    prefix_only = "starting " if not full else ""
    if failures and (not remote or _offline()):
        raise ChecksumError(
            f"the local copies of {card.name}'s weights do not match its card: "
            f"{'; '.join(failures)}. Replace them with the file whose {algorithm} is "
            f"{prefix_only}{digest}"
            + (f", or unset ZOO_OFFLINE to download it from {remote[0]}." if remote else ".")
        )
    if _offline():
        raise OfflineError(
            f"ZOO_OFFLINE=1 and the weights of {card.name} are not cached. Place {card.file_name} "
            f"({algorithm} {prefix_only}{digest}) at {dest}, or in a folder named by ZOO_MIRROR, "
            f"or unset ZOO_OFFLINE to download it from {card.urls[0]}."
        )
    if not remote:
        raise FetchError(
            f"no usable copy of {card.name}'s weights: "
            f"{'; '.join(failures) or 'none of ' + ', '.join(sources(card)) + ' exists'}."
        )


def _download_locked(card: WeightCard, dest: Path, remote: list[str], failures: list[str], *,
                     retries: int, backoff: float, progress: bool, limits: _Limits):
    """(dest, kind) once a remote source gave the card's bytes, else (None, the error class to
    raise): one process at a time downloads into the cache, the others wait and reuse it."""
    kind = FetchError
    try:
        with _Lock(dest.with_name(dest.name + ".lock")):
            if dest.is_file():  # another process may have finished it while we waited
                if is_verified(dest, card):
                    return dest, kind
                # bytes that no longer match their hash are fetched again, never loaded
                _unlink(dest)
            for url in remote:
                try:
                    _download(url, dest, card, retries, backoff, progress, limits)
                    return dest, kind
                except CacheWriteError:
                    raise
                except FetchError as e:
                    failures.append(str(e))
                    kind = type(e) if kind is FetchError and isinstance(e, ChecksumError) else kind
    except FetchError:
        raise
    except OSError as e:
        raise cache_error(e, dest.parent, card) from None
    return None, kind

