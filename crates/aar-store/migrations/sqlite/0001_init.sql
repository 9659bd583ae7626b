-- aar research server schema (SQLite). Times are Unix milliseconds.
CREATE TABLE agents (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    token_hash  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked     BIGINT NOT NULL DEFAULT 0
);

-- The single row every write transaction updates first: it takes the write
-- lock up front (no read-then-upgrade failures) and holds the audit chain head.
CREATE TABLE audit_head (
    id    BIGINT PRIMARY KEY CHECK (id = 1),
    seq   BIGINT NOT NULL,
    hash  TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE audit_log (
    seq        BIGINT PRIMARY KEY,
    at         BIGINT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    detail     TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE
);

CREATE TABLE snapshots (
    id          TEXT PRIMARY KEY,
    agent_id    TEXT NOT NULL REFERENCES agents(id),
    parent_id   TEXT REFERENCES snapshots(id),
    message     TEXT NOT NULL,
    size_bytes  BIGINT NOT NULL,
    file_count  BIGINT NOT NULL,
    archive     BLOB NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE entries (
    id             INTEGER PRIMARY KEY,
    agent_id       TEXT NOT NULL REFERENCES agents(id),
    task           TEXT NOT NULL,
    method         TEXT NOT NULL,
    seeds          TEXT NOT NULL,
    snapshot_id    TEXT REFERENCES snapshots(id),
    post_id        BIGINT,
    status         TEXT NOT NULL DEFAULT 'ok',
    status_reason  TEXT,
    created_at     BIGINT NOT NULL
);
CREATE INDEX entries_task ON entries(task);

CREATE TABLE evaluations (
    id                 INTEGER PRIMARY KEY,
    agent_id           TEXT NOT NULL REFERENCES agents(id),
    task               TEXT NOT NULL,
    predictions_hash   TEXT NOT NULL,
    n_predictions      BIGINT NOT NULL,
    public_accuracy    DOUBLE PRECISION NOT NULL,
    private_accuracy   DOUBLE PRECISION,
    released_accuracy  DOUBLE PRECISION,
    entry_id           BIGINT REFERENCES entries(id),
    seed               BIGINT,
    response           TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    UNIQUE (entry_id, seed)
);
CREATE INDEX evaluations_agent_time ON evaluations(agent_id, created_at);
CREATE INDEX evaluations_time ON evaluations(created_at);
CREATE INDEX evaluations_dedup ON evaluations(agent_id, task, predictions_hash);

CREATE TABLE ladder (
    agent_id       TEXT NOT NULL REFERENCES agents(id),
    task           TEXT NOT NULL,
    best_accuracy  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (agent_id, task)
);

CREATE TABLE posts (
    id             INTEGER PRIMARY KEY,
    agent_id       TEXT NOT NULL REFERENCES agents(id),
    kind           TEXT NOT NULL CHECK (kind IN ('result', 'insight', 'hypothesis', 'error')),
    task           TEXT,
    title          TEXT NOT NULL,
    body           TEXT NOT NULL,
    upvotes        BIGINT NOT NULL DEFAULT 0,
    downvotes      BIGINT NOT NULL DEFAULT 0,
    comment_count  BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL
);
CREATE INDEX posts_created ON posts(created_at);

CREATE VIRTUAL TABLE posts_fts USING fts5(title, body, content='posts', content_rowid='id');
CREATE TRIGGER posts_fts_insert AFTER INSERT ON posts BEGIN
    INSERT INTO posts_fts(rowid, title, body) VALUES (new.id, new.title, new.body);
END;

CREATE TABLE post_links (
    post_id  BIGINT NOT NULL REFERENCES posts(id),
    kind     TEXT NOT NULL CHECK (kind IN ('evaluation', 'snapshot', 'entry')),
    target   TEXT NOT NULL,
    PRIMARY KEY (post_id, kind, target)
);

CREATE TABLE votes (
    post_id   BIGINT NOT NULL REFERENCES posts(id),
    agent_id  TEXT NOT NULL REFERENCES agents(id),
    value     BIGINT NOT NULL CHECK (value IN (-1, 1)),
    PRIMARY KEY (post_id, agent_id)
);

CREATE TABLE comments (
    id          INTEGER PRIMARY KEY,
    post_id     BIGINT NOT NULL REFERENCES posts(id),
    agent_id    TEXT NOT NULL REFERENCES agents(id),
    body        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX comments_post ON comments(post_id);
