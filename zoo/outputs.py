"""The one overwrite rule: a zoo writer deletes or replaces only what a manifest it wrote lists.

Every output the zoo writes is recorded in a manifest, ``.zoo-manifest.json``: inside an output
folder (a SavedModel, a run folder, converted images) it lists the folder's files and their
sizes; beside an output file (``model.tflite``) the parent folder's manifest lists the file.
An existing path is replaced only with ``overwrite=True`` and only when its manifest accounts for
every file in it, unchanged in size. A user's file — or one changed since the zoo wrote it — is
never deleted: the writer raises :class:`~zoo.errors.OutputError` naming it instead.

New outputs are written into a temporary sibling and swapped in only after the writer succeeded,
so a failure midway leaves the target as it was. Paths that are the working directory, one of its
ancestors, the home folder or a file-system root are refused outright.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from zoo.errors import OutputError

MANIFEST = ".zoo-manifest.json"


def _files(folder: Path) -> dict[str, int]:
    """Relative path -> size of every file below ``folder`` (the manifest itself excluded)."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            p = Path(root) / name
            rel = p.relative_to(folder).as_posix()
            if rel != MANIFEST:
                out[rel] = p.lstat().st_size
    return out


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _refuse_dangerous(path: Path, given) -> None:
    cwd = Path.cwd().resolve()
    real = path.resolve()
    if real == real.parent or real == Path.home().resolve() or real == cwd or real in cwd.parents:
        raise OutputError(
            f"{str(given)!r} is the working directory, one of its ancestors, the home folder or a "
            "file-system root: the zoo never writes an output over it. Give a new sub-folder, "
            "e.g. 'deploy/saved_model'."
        )


def _unaccounted(path: Path) -> list[str]:
    """Files in an existing output that its manifest does not list with their current size."""
    if path.is_dir() and not path.is_symlink():
        manifest = _read(path / MANIFEST)
        listed = manifest.get("files", {})
        names = set(manifest.get("names", [])) if not manifest.get("complete", True) else set()
        if not manifest.get("writer"):
            return sorted(_files(path)) or ["(the folder has no zoo manifest)"]
        return sorted(rel for rel, size in _files(path).items()
                      if listed.get(rel) != size and rel.split("/")[0] not in names)
    entry = _read(path.parent / MANIFEST).get("files", {}).get(path.name)
    return (
        []
        if entry is not None and not path.is_symlink() and path.stat().st_size == entry
        else [path.name]
    )


def check_target(path, *, overwrite: bool) -> Path:
    """OutputError unless ``path`` is new, or a zoo output that ``overwrite`` allows replacing."""
    given = path
    path = Path(os.path.expanduser(str(path))).absolute()
    _refuse_dangerous(path, given)
    if not os.path.lexists(path):
        if path.parent.exists() and not path.parent.is_dir():
            raise OutputError(
                f"cannot write {str(given)!r}: {str(path.parent)!r} is a file, not a folder. "
                "Choose another output path."
            )
        return path
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        return path  # an empty folder the user made for the output
    if not overwrite:
        raise OutputError(
            f"{str(given)!r} exists; pass overwrite=True (CLI: --overwrite) to replace a previous "
            "zoo output there, or choose a new path."
        )
    foreign = _unaccounted(path)
    if foreign:
        shown = ", ".join(foreign[:5]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        raise OutputError(
            f"{str(given)!r} holds files the zoo did not write or that changed since it wrote them "
            f"({shown}); the zoo deletes only its own outputs. Move those files away or choose a "
            "new path."
        )
    return path


def _record(target: Path, writer: str, *, complete: bool = True, names: Sequence[str] = ()) -> None:
    if target.is_dir():
        _write(target / MANIFEST, {"writer": writer, "complete": complete, "names": list(names),
                                   "files": _files(target)})
    else:
        manifest_path = target.parent / MANIFEST
        manifest = _read(manifest_path)
        manifest.setdefault("files", {})[target.name] = target.stat().st_size
        manifest.setdefault("writers", {})[target.name] = writer
        manifest.setdefault("writer", "zoo")
        _write(manifest_path, manifest)


def _os_error(e: OSError, path: Path) -> OutputError:
    return OutputError(
        f"cannot write {str(path)!r} ({e.strerror or e}): check that the folder exists, is "
        "writable and has free space, or choose another output path."
    )


@contextmanager
def staged(paths: Sequence, *, writer: str, overwrite: bool = False) -> Iterator[list[Path]]:
    """Yield temporary paths to write ``paths`` into; swap them in only if the block succeeds.

    Each target is checked first (see :func:`check_target`); a folder output is recorded with the
    list of its files, a file output in its folder's manifest. On any exception the temporary
    copies are removed and every target is left exactly as it was.
    """
    targets = [check_target(p, overwrite=overwrite) for p in paths]
    stage_dirs: dict[Path, Path] = {}
    try:
        for t in targets:
            if t.parent not in stage_dirs:
                t.parent.mkdir(parents=True, exist_ok=True)
                stage_dirs[t.parent] = Path(
                    tempfile.mkdtemp(prefix=f".{t.name}.", suffix=".zoo-tmp", dir=t.parent)
                )
    except OSError as e:
        for d in stage_dirs.values():
            shutil.rmtree(d, ignore_errors=True)
        raise _os_error(e, targets[0]) from None
    staging = [stage_dirs[t.parent] / t.name for t in targets]
    try:
        yield staging
        for t, s in zip(targets, staging, strict=True):
            if not os.path.lexists(s):
                raise OutputError(f"{writer} did not write {str(t)!r}; nothing was changed.")
        _swap_in(targets, staging, stage_dirs)
        for t in targets:
            _record(t, writer)
    except OSError as e:
        raise _os_error(e, targets[0]) from None
    finally:
        for d in stage_dirs.values():
            shutil.rmtree(d, ignore_errors=True)


def _swap_in(targets: list[Path], staging: list[Path], stage_dirs: dict[Path, Path]) -> None:
    """Move old outputs aside, new ones in; put the old ones back if a move fails."""
    moved: list[tuple[Path, Path]] = []
    done: list[Path] = []
    try:
        for t, s in zip(targets, staging, strict=True):
            if os.path.lexists(t):
                old = stage_dirs[t.parent] / (".old-" + t.name)
                os.replace(t, old)
                moved.append((t, old))
            os.replace(s, t)
            done.append(t)
    except OSError:
        for t in done:
            shutil.rmtree(t, ignore_errors=True) if t.is_dir() else t.unlink(missing_ok=True)
        for t, old in moved:
            os.replace(old, t)
        raise


def claim_dir(path, *, writer: str, overwrite: bool = False, names: Sequence[str] = ()) -> Path:
    """Make ``path`` an empty output folder for a writer that writes as it goes (training runs).

    A previous zoo output there is removed when ``overwrite`` allows it; ``names`` are the
    top-level entries the writer will create, recorded at once so that a run that dies midway
    is still recognised as the zoo's own. Call :func:`finish_dir` when done.
    """
    target = check_target(path, overwrite=overwrite)
    try:
        if os.path.lexists(target):
            shutil.rmtree(
                target
            ) if target.is_dir() and not target.is_symlink() else target.unlink()
        target.mkdir(parents=True)
        _record(target, writer, complete=False, names=names)
    except OSError as e:
        raise _os_error(e, target) from None
    return target


def finish_dir(path, *, writer: str) -> None:
    """Record every file a :func:`claim_dir` writer left in ``path``."""
    _record(Path(path), writer)
