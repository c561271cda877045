"""The study database: settings and trials, stored as they finish.

SQLAlchemy Core over any database it supports. The default is a SQLite file
in the study folder; a PostgreSQL URL (`postgresql+psycopg://...`) lets
several machines read the same study. One controller process writes a study
at a time (the runner holds a lock on the study folder); workers never touch
the database, they return their results to the controller.

Tables:

    studies   one row per study name: the spec's SHA-256 and contents
    settings  one row per (method, setting): grid or Bayesian round, values
    trials    one row per (setting, seed): status, FIDs, error, timing
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmark.errors import UserError
from benchmark.study.spec import Setting

# Trial states. "pending" and "running" are unfinished; the others are final.
PENDING = "pending"
RUNNING = "running"
COMPLETED = "completed"  # trained; `fid` is the lowest FID over evaluations
DIVERGED = "diverged"  # a loss became NaN or infinite
NONFINITE = "nonfinite"  # trained, but G produced NaN images at every evaluation
ERROR = "error"  # an exception stopped the trial
FINAL_STATES = (COMPLETED, DIVERGED, NONFINITE, ERROR)
FAILED_STATES = (DIVERGED, NONFINITE, ERROR)

GRID_PHASE = "grid"
BAYESIAN_PHASE = "bayesian"

metadata = sa.MetaData()

studies_table = sa.Table(
    "studies",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("spec_sha256", sa.String(64), nullable=False),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("created_utc", sa.String(40), nullable=False),
)

settings_table = sa.Table(
    "settings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study", sa.String(200), sa.ForeignKey("studies.name"), nullable=False),
    sa.Column("method", sa.String(200), nullable=False),
    sa.Column("phase", sa.String(20), nullable=False),
    # 0 for the grid, 1.. for the Bayesian rounds.
    sa.Column("round", sa.Integer, nullable=False),
    # Order within the round, as proposed.
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("key", sa.String(12), nullable=False),
    sa.Column("lr", sa.Float, nullable=False),
    sa.Column("beta1", sa.Float, nullable=False),
    sa.Column("beta2", sa.Float, nullable=False),
    sa.Column("n_disc", sa.Integer, nullable=False),
    sa.Column("penalty_weight", sa.Float, nullable=False),
    sa.Column("created_utc", sa.String(40), nullable=False),
    sa.UniqueConstraint("study", "method", "round", "position"),
)

trials_table = sa.Table(
    "trials",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("setting_id", sa.Integer, sa.ForeignKey("settings.id"), nullable=False),
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("fid", sa.Float),
    sa.Column("fid_step", sa.Integer),
    sa.Column("fid_final", sa.Float),
    sa.Column("kid_final", sa.Float),
    sa.Column("diverged_step", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("seconds", sa.Float),
    sa.Column("host", sa.String(200)),
    # torch intra-op threads of the trial (CPU results depend on it).
    sa.Column("threads", sa.Integer),
    sa.Column("run_dir", sa.Text),
    sa.Column("started_utc", sa.String(40)),
    sa.Column("finished_utc", sa.String(40)),
    sa.UniqueConstraint("setting_id", "seed"),
)


def now_utc() -> str:
    """Return the current UTC time in ISO 8601, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def sqlite_url(path: Path) -> str:
    """Return the SQLAlchemy URL of a SQLite file."""
    return f"sqlite:///{Path(path).resolve()}"


@dataclass(frozen=True)
class SettingRow:
    """A stored setting with its place in the study."""

    id: int
    method: str
    phase: str
    round: int
    position: int
    key: str
    setting: Setting


@dataclass(frozen=True)
class TrialResult:
    """Result a worker returns for one finished trial."""

    status: str
    fid: float | None = None
    fid_step: int | None = None
    fid_final: float | None = None
    kid_final: float | None = None
    diverged_step: int | None = None
    error: str | None = None
    seconds: float | None = None
    host: str | None = None
    threads: int | None = None
    run_dir: str | None = None
    started_utc: str | None = None
    finished_utc: str | None = None


class StudyStorage:
    """Read and write one study's settings and trials."""

    def __init__(self, url: str, study: str):
        self.url = url
        self.study = study
        try:
            self.engine = sa.create_engine(url)
            metadata.create_all(self.engine)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as error:
            raise UserError(
                f"invalid --storage URL {url!r}: {error}; use e.g. "
                "sqlite:///study.db or postgresql+psycopg://user@host/db"
            ) from None
        except sa.exc.OperationalError as error:
            reason = str(error.orig).strip().splitlines()[0]
            raise UserError(
                f"cannot open the study database {url!r}: {reason}; check the "
                "URL and that the server is running"
            ) from None
        except ModuleNotFoundError as error:
            raise UserError(
                f"the database driver {error.name!r} for {url!r} is not installed; "
                "install gan-benchmark[study]"
            ) from None

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    # ------------------------------------------------------------------
    # Study

    def register(self, spec_sha256: str, spec: dict[str, Any]) -> None:
        """Record the study's spec, or check that it matches the stored one."""
        with self.engine.begin() as connection:
            row = connection.execute(
                sa.select(studies_table).where(studies_table.c.name == self.study)
            ).first()
            if row is None:
                connection.execute(
                    studies_table.insert().values(
                        name=self.study,
                        spec_sha256=spec_sha256,
                        spec=json.loads(json.dumps(spec)),
                        created_utc=now_utc(),
                    )
                )
                return
        if row.spec_sha256 != spec_sha256:
            raise UserError(
                f"the database {self.url!r} holds study {self.study!r} run with "
                f"another spec (sha256 {row.spec_sha256[:12]}, now "
                f"{spec_sha256[:12]}); restore the spec or give the study a new name"
            )

    def stored_spec(self) -> dict[str, Any] | None:
        """Return the spec stored with the study, or None if it is not registered."""
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(studies_table.c.spec).where(
                    studies_table.c.name == self.study
                )
            ).first()
        return None if row is None else row.spec

    # ------------------------------------------------------------------
    # Settings and trials

    def settings(self, method: str | None = None) -> list[SettingRow]:
        """Return the stored settings, by method, round and position."""
        table = settings_table
        query = sa.select(table).where(table.c.study == self.study)
        if method is not None:
            query = query.where(table.c.method == method)
        query = query.order_by(table.c.method, table.c.round, table.c.position)
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [_setting_row(row) for row in rows]

    def add_settings(
        self,
        method: str,
        phase: str,
        round_number: int,
        settings: Iterable[Setting],
        seeds: int,
    ) -> None:
        """Store the settings of one round and a pending trial per seed.

        All rows go in one transaction, so a round is stored whole or not at all.
        """
        created = now_utc()
        with self.engine.begin() as connection:
            for position, setting in enumerate(settings):
                values = dataclasses.asdict(setting)
                inserted = connection.execute(
                    settings_table.insert().values(
                        study=self.study,
                        method=method,
                        phase=phase,
                        round=round_number,
                        position=position,
                        key=setting.key(),
                        created_utc=created,
                        **values,
                    )
                )
                setting_id = inserted.inserted_primary_key[0]
                connection.execute(
                    trials_table.insert(),
                    [
                        {"setting_id": setting_id, "seed": seed, "status": PENDING}
                        for seed in range(seeds)
                    ],
                )

    def round_exists(self, method: str, round_number: int) -> bool:
        """Tell whether the settings of a round are stored."""
        table = settings_table
        query = (
            sa.select(sa.func.count())
            .select_from(table)
            .where(table.c.study == self.study)
            .where(table.c.method == method)
            .where(table.c.round == round_number)
        )
        with self.engine.connect() as connection:
            return connection.execute(query).scalar_one() > 0

    def trials(
        self, statuses: Iterable[str] | None = None, max_round: int | None = None
    ) -> list[dict[str, Any]]:
        """Return trials joined with their settings, one dict per trial."""
        query = (
            sa.select(
                trials_table,
                settings_table.c.method,
                settings_table.c.phase,
                settings_table.c.round,
                settings_table.c.position,
                settings_table.c.key,
                settings_table.c.lr,
                settings_table.c.beta1,
                settings_table.c.beta2,
                settings_table.c.n_disc,
                settings_table.c.penalty_weight,
            )
            .join(settings_table, trials_table.c.setting_id == settings_table.c.id)
            .where(settings_table.c.study == self.study)
            .order_by(
                settings_table.c.method,
                settings_table.c.round,
                settings_table.c.position,
                trials_table.c.seed,
            )
        )
        if statuses is not None:
            query = query.where(trials_table.c.status.in_(list(statuses)))
        if max_round is not None:
            query = query.where(settings_table.c.round <= max_round)
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def mark_running(self, trial_id: int) -> None:
        """Mark a trial as handed to a worker."""
        self._update(trial_id, status=RUNNING, started_utc=now_utc())

    def record_result(self, trial_id: int, result: TrialResult) -> None:
        """Store a finished trial's result."""
        if result.status not in FINAL_STATES:
            raise ValueError(f"not a final trial state: {result.status!r}")
        self._update(trial_id, **dataclasses.asdict(result))

    def reset_unfinished(self) -> int:
        """Turn trials left "running" by a stopped controller back into pending.

        Returns:
            The number of trials reset.
        """
        with self.engine.begin() as connection:
            ids = sa.select(settings_table.c.id).where(
                settings_table.c.study == self.study
            )
            result = connection.execute(
                trials_table.update()
                .where(trials_table.c.status == RUNNING)
                .where(trials_table.c.setting_id.in_(ids))
                .values(status=PENDING)
            )
            return result.rowcount

    def _update(self, trial_id: int, **values: Any) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                trials_table.update()
                .where(trials_table.c.id == trial_id)
                .values(**values)
            )


def _setting_row(row: Any) -> SettingRow:
    return SettingRow(
        id=row.id,
        method=row.method,
        phase=row.phase,
        round=row.round,
        position=row.position,
        key=row.key,
        setting=Setting(
            lr=row.lr,
            beta1=row.beta1,
            beta2=row.beta2,
            n_disc=row.n_disc,
            penalty_weight=row.penalty_weight,
        ),
    )
