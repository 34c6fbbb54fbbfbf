"""Writing files so that nothing is lost: atomic writes, CSV upserts, strict JSON, hashes, a lock.

Atomic means a reader (or a run killed half-way) never sees half a file: every write goes to a
temporary name in the same folder (same file system) and is renamed over the target. Temporary
names are ``.<name>.<random>.tmp``, so a crash leaves at worst a hidden ``.tmp`` file next to the
target, never a damaged target. Files get the permissions ``open()`` would have given them
(``mkstemp`` alone would make them private).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; the lock is then a no-op
    fcntl = None

TMP_SUFFIX = ".tmp"


def default_file_mode() -> int:
    """0o666 minus the process umask: what ``open()`` would have created (mkstemp uses 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(
    path: str | Path, tmp_dir: str | Path | None = None, suffix: str = TMP_SUFFIX
) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed over ``path``, on error removed.

    ``tmp_dir`` (default: ``path``'s folder) must be on the same file system as ``path``.
    ``suffix`` ends the temporary name (``.tmp.nii.gz`` for writers that go by the extension).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tmp_dir) if tmp_dir is not None else path.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=folder)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, tmp_dir: str | Path | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path, tmp_dir) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def upsert_rows(
    path: str | Path,
    rows: pd.DataFrame | Iterable[Mapping[str, Any]],
    key: str = "VolumeName",
    sort_key: Callable[[str], Any] | None = None,
) -> Path:
    """Insert or replace rows (matched on ``key``) in the CSV at ``path``, written atomically.

    Rows already there for other keys stay, so several runs add up. Columns missing on either side
    are left empty. The table is ordered by ``sort_key`` of the key column (CT-RATE tables pass
    ``layout.natural_key``, which this base module may not import), else kept in file order with
    new keys last.
    """
    new = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if key not in new.columns:
        raise ValueError(f"rows for {path} have no {key!r} column")
    path = Path(path)
    if path.is_file():
        old = pd.read_csv(path)
        if key not in old.columns:
            raise ValueError(f"{path} has no {key!r} column; it is not a CT-RATE table")
        old = old[~old[key].isin(new[key])]
        columns = list(old.columns) + [c for c in new.columns if c not in old.columns]
        merged = pd.concat([old, new], ignore_index=True)[columns]
    else:
        merged = new
    if sort_key is not None:
        order = sorted(range(len(merged)), key=lambda i: sort_key(merged[key].iloc[i]))
        merged = merged.iloc[order].reset_index(drop=True)
    with atomic_path(path) as tmp:
        merged.to_csv(tmp, index=False)
    return path


def jsonable(obj: Any) -> Any:
    """A copy with NaN / inf as None and numpy / torch scalars as Python numbers (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and np.ndim(obj) == 0:  # numpy and torch scalars
        obj = obj.item()
    elif isinstance(obj, np.ndarray) or hasattr(obj, "detach"):
        return jsonable(np.asarray(obj).tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | Path, data: Any, indent: int | None = 2) -> Path:
    """Strict JSON (NaN and inf written as null) of ``data``, written atomically."""
    text = json.dumps(jsonable(data), indent=indent, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def sha256(data: bytes) -> str:
    """Hex sha256 of bytes in memory."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def remove_stale_temporaries(folder: str | Path, suffix: str = TMP_SUFFIX) -> list[Path]:
    """Delete the hidden ``.<name>.<random><suffix>`` files :func:`atomic_path` leaves in
    ``folder`` when its process is killed mid-write; the removed paths.

    Call it only while no other process writes into ``folder`` (under its :func:`folder_lock`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(f".*{suffix}") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def reimporting_main_script() -> bool:
    """Whether this process is a spawn / forkserver child importing its parent's main script.

    Such a child runs the script's top-level code again (as ``__mp_main__``); a script that calls
    a library function there without ``if __name__ == "__main__":`` would make every worker
    repeat the parent's work and wait for the locks the parent holds. ``parent_process()`` is
    still None at that point; the flag multiprocessing's own bootstrapping check reads
    (``current_process()._inheriting``) is set while the child imports the script."""
    if not getattr(multiprocessing.current_process(), "_inheriting", False):
        return False
    return "__mp_main__" in sys.modules


def refuse_in_reimported_main(what: str) -> None:
    """Raise a RuntimeError with the guard advice when :func:`reimporting_main_script`."""
    if reimporting_main_script():
        script = getattr(sys.modules.get("__mp_main__"), "__file__", None) or "the main script"
        raise RuntimeError(
            f"{what} was called while a worker process imported {script}: put the script's "
            'top-level code under `if __name__ == "__main__":` (worker processes import the '
            "script that started them)"
        )


class LockTimeout(TimeoutError):
    """A folder lock stayed held by another process for longer than the caller would wait."""


@contextlib.contextmanager
def folder_lock(
    target: str | Path,
    timeout: float = 1800.0,
    notify: Callable[[str], None] | None = None,
    notify_after: float = 5.0,
) -> Iterator[None]:
    """Hold an exclusive lock on ``<parent>/.<name>.lock`` (POSIX ``flock``; a no-op elsewhere).

    Two processes building the same folder (two notebooks at once) then run one after the other.
    The lock file names its holder's pid. A waiter says so through ``notify`` (default: a line on
    stderr) after ``notify_after`` seconds, naming the lock and the holder, and gives up with
    :class:`LockTimeout` after ``timeout`` seconds: nothing waits without a word or for ever. The
    kernel releases a flock when its holder dies, so a killed process never leaves it held (the
    lock file stays, empty or naming a dead pid, and blocks no one). Called from a worker process
    that is importing its parent's main script, it raises a RuntimeError with the
    ``if __name__ == "__main__":`` advice instead of waiting for the lock its parent holds.
    """
    refuse_in_reimported_main(f"folder_lock({target})")
    if fcntl is None:  # pragma: no cover
        yield
        return
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    say = notify or (lambda text: print(text, file=sys.stderr, flush=True))
    with open(lock_path, "a+b") as f:
        start, told = time.monotonic(), False
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                holder = lock_path.read_text(errors="replace").strip() or "unknown"
                if waited > timeout:
                    raise LockTimeout(
                        f"{lock_path} is still held by another process (pid {holder}) after "
                        f"{timeout:.0f} s; wait for it to finish, or stop it"
                    ) from None
                if not told and waited > notify_after:
                    say(f"waiting for {lock_path}, held by process {holder} ...")
                    told = True
                time.sleep(0.2)
        try:
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()).encode())
            f.flush()
            yield
        finally:
            f.truncate(0)
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
