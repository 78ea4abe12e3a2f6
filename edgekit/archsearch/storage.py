"""Opening the study: the default SQLite file, any Optuna storage URL, or a journal file."""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

from ..core.errors import UsageError, one_line

DIRECTIONS = ("maximize", "minimize")  # the scored file's task metric, its p90 latency


def open_storage(url: str | None, folder: Path):
    """``None``: ``folder/study.db`` (SQLite). ``journal:PATH`` or a path ending in .log/.journal: an Optuna
    journal file (works on NFS without a database server). Anything else: an RDB URL (sqlite:///,
    postgresql://, mysql://). A storage that cannot be opened is a usage error."""
    import optuna

    if url is None:
        folder.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{(folder / 'study.db').resolve()}"
    try:
        if url.startswith("journal:") or url.endswith((".log", ".journal")):
            from optuna.storages.journal import JournalFileBackend

            path = Path(url.removeprefix("journal:"))
            if not path.parent.is_dir():
                raise UsageError(f"--storage {url}: folder {path.parent} does not exist")
            return optuna.storages.JournalStorage(JournalFileBackend(str(path))), url
        kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
        with _creation_lock(url):
            return _rdb(optuna, url, kwargs), url
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"--storage {url} cannot be opened ({one_line(exc)[:300]}); give a writable SQLite path "
                         "(sqlite:///path/study.db), a reachable database URL or journal:PATH") from None


def _rdb(optuna, url: str, kwargs: dict, attempts: int = 4):
    """RDBStorage creates its schema (and Alembic's version table) on first use; workers that start at the
    same moment on a new database race there. Retry a few times before calling the storage unusable."""
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


@contextmanager
def _creation_lock(url: str):
    """A local SQLite file: workers on this host create it one after the other (an fcntl lock next to it)."""
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
    if path is None or not Path(path).parent.is_dir():
        yield
        return
    import fcntl

    with open(Path(path).with_name(Path(path).name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def open_study(storage, url: str, name: str, sampler):
    import optuna

    try:
        with _creation_lock(url):
            return optuna.create_study(storage=storage, study_name=name, directions=list(DIRECTIONS),
                                       sampler=sampler, load_if_exists=True)
    except Exception as exc:
        raise UsageError(f"--storage {url}: study '{name}' cannot be opened or created ({one_line(exc)[:300]}); "
                         "pick another --study name") from None
