-- What the orchestrator relays about each researcher, for the overseer's
-- dashboard. `researcher_events`: the researcher's transcript, one row per
-- transcript line (`seq` is the line number, so a relay that resumes after a
-- crash re-sends lines without duplicating them). `researcher_status`: its latest
-- notebook, spend, budgets and sandbox resource use (JSON), replaced on each relay.
CREATE TABLE researcher_events (
    agent_id    TEXT NOT NULL REFERENCES agents(id),
    seq         BIGINT NOT NULL,
    ts_ms       BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (agent_id, seq)
);

CREATE TABLE researcher_status (
    agent_id    TEXT PRIMARY KEY REFERENCES agents(id),
    body        TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);
