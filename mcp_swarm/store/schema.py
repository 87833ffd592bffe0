"""The database schema, as an ordered list of migrations.

`PRAGMA user_version` records how many migrations a database has had. A migration is never
edited once released; a change of schema is a new entry at the end.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: the task ledger.
    """
    CREATE TABLE tasks (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        subject     TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        active_form TEXT,
        status      TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'in_progress', 'completed', 'failed', 'deleted')),
        owner       TEXT,
        metadata    TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    );
    CREATE INDEX tasks_by_status ON tasks (status);

    -- task_id cannot start until blocker_id is completed (or deleted).
    CREATE TABLE task_dependencies (
        task_id    INTEGER NOT NULL REFERENCES tasks (id),
        blocker_id INTEGER NOT NULL REFERENCES tasks (id),
        PRIMARY KEY (task_id, blocker_id),
        CHECK (task_id <> blocker_id)
    ) WITHOUT ROWID;
    CREATE INDEX task_dependencies_by_blocker ON task_dependencies (blocker_id, task_id);

    -- Every change of every task: old and new are JSON values.
    CREATE TABLE task_events (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id INTEGER NOT NULL REFERENCES tasks (id),
        at      TEXT NOT NULL,
        actor   TEXT NOT NULL,
        field   TEXT NOT NULL,
        old     TEXT,
        new     TEXT
    );
    CREATE INDEX task_events_by_task ON task_events (task_id, id);
    """,
    # 2: workers, one row per run of a task by a runtime.
    """
    CREATE TABLE workers (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id        INTEGER NOT NULL REFERENCES tasks (id),
        runtime        TEXT NOT NULL,
        attempt        INTEGER NOT NULL,
        state          TEXT NOT NULL CHECK (state IN
                       ('starting', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled', 'lost')),
        pid            INTEGER,
        pid_start_time INTEGER,
        cwd            TEXT NOT NULL,
        log            TEXT NOT NULL,
        session_id     TEXT,
        exit_code      INTEGER,
        summary        TEXT,
        error          TEXT,
        cost_usd       REAL,
        num_turns      INTEGER,
        validation     TEXT CHECK (validation IS NULL OR json_valid(validation)),
        task_status    TEXT,
        started_at     TEXT NOT NULL,
        ended_at       TEXT,
        -- When wait() last handed this worker's result to the Mayor; NULL: not yet.
        reported_at    TEXT
    );
    CREATE INDEX workers_by_task ON workers (task_id, id);
    CREATE INDEX workers_live ON workers (state) WHERE state IN ('starting', 'running');
    """,
    # 3: supervision that outlives a server (distributed mode, adoption after a restart).
    """
    -- local: a child process of the supervising server; distributed: a detached tmux session.
    ALTER TABLE workers ADD COLUMN mode TEXT NOT NULL DEFAULT 'local'
        CHECK (mode IN ('local', 'distributed'));
    ALTER TABLE workers ADD COLUMN tmux_session TEXT;
    -- The server process supervising a live worker, as "pid:start time": while it runs, no other
    -- server adopts the worker.
    ALTER TABLE workers ADD COLUMN supervisor TEXT;
    """,
    # 4: Agent Mail between the Mayor and workers, and advisory file reservations.
    """
    CREATE TABLE messages (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        at        TEXT NOT NULL,
        sender    TEXT NOT NULL,     -- 'mayor' or a worker id
        recipient TEXT NOT NULL,     -- 'mayor' or a worker id
        task_id   INTEGER REFERENCES tasks (id),
        type      TEXT NOT NULL CHECK (type IN
                  ('progress', 'help_request', 'done', 'failed', 'blocked', 'instruction', 'info')),
        subject   TEXT NOT NULL,
        body      TEXT NOT NULL DEFAULT '',
        read_at   TEXT
    );
    CREATE INDEX messages_by_recipient ON messages (recipient, id);

    CREATE TABLE reservations (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        holder      TEXT NOT NULL,   -- 'mayor' or a worker id
        pattern     TEXT NOT NULL,   -- a path or glob, relative to the project
        exclusive   INTEGER NOT NULL CHECK (exclusive IN (0, 1)),
        reason      TEXT,
        created_at  TEXT NOT NULL,
        expires_at  TEXT NOT NULL,
        released_at TEXT
    );
    CREATE INDEX reservations_open ON reservations (expires_at) WHERE released_at IS NULL;
    """,
    # 5: worktree isolation: a worker's own git worktree, what it changed, and its integration.
    """
    ALTER TABLE workers ADD COLUMN isolation TEXT NOT NULL DEFAULT 'shared'
        CHECK (isolation IN ('shared', 'worktree'));
    -- {"path", "branch", "base_commit", "subdirectory"}: enough to read or integrate it later.
    ALTER TABLE workers ADD COLUMN worktree TEXT CHECK (worktree IS NULL OR json_valid(worktree));
    -- The files it changed: [{"path", "added", "removed", "status", ...}], read when it ended.
    ALTER TABLE workers ADD COLUMN changes TEXT CHECK (changes IS NULL OR json_valid(changes));
    -- The main tree's commit that took its changes in.
    ALTER TABLE workers ADD COLUMN integrated_commit TEXT;
    ALTER TABLE workers ADD COLUMN integrated_at TEXT;
    """,
    # 6: the servers that want worker slots, so that two Mayors share max_workers fairly.
    """
    -- A server ("pid:start time", as workers.supervisor) whose last spawn found no free slot for
    -- a ready task, and when (unix seconds): while it runs and wants slots, the other servers on
    -- the database take no more than their share of max_workers. Its row goes when it is served.
    CREATE TABLE slot_demand (
        supervisor TEXT PRIMARY KEY,
        wanted_at  REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # 7: workers reach the swarm through the server's worker endpoint, not the database file; and
    # each result belongs to the Mayor that spawned the worker.
    """
    -- SHA-256 (hex) of the token minted for the worker's current attempt: the worker endpoint
    -- grants the worker tools for this row only while its state is live. The token itself is
    -- never stored.
    ALTER TABLE workers ADD COLUMN token_hash TEXT;
    CREATE UNIQUE INDEX workers_by_token ON workers (token_hash) WHERE token_hash IS NOT NULL;
    -- The Mayor whose plain `wait` gets this worker's result: a name an HTTP session sends, or
    -- NULL for a stdio server's Mayor and the command line's (any of them may take it).
    ALTER TABLE workers ADD COLUMN mayor TEXT;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)
