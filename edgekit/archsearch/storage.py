"""Opening the study: the default SQLite file, any Optuna storage URL, or a journal file."""
from __future__ import annotations

from pathlib import Path

from ..errors import UsageError, one_line

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
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs), url
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"--storage {url} cannot be opened ({one_line(exc)[:300]}); give a writable SQLite path "
                         "(sqlite:///path/study.db), a reachable database URL or journal:PATH") from None


def open_study(storage, url: str, name: str, sampler):
    import optuna

    try:
        return optuna.create_study(storage=storage, study_name=name, directions=list(DIRECTIONS), sampler=sampler,
                                   load_if_exists=True)
    except Exception as exc:
        raise UsageError(f"--storage {url}: study '{name}' cannot be opened or created ({one_line(exc)[:300]}); "
                         "pick another --study name") from None
