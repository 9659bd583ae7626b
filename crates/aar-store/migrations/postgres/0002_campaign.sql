-- The campaign's state. Once closed, nothing more is evaluated or entered,
-- and agents may see the private-split scores of their own entries.
CREATE TABLE campaign (
    id         BIGINT PRIMARY KEY CHECK (id = 1),
    closed_at  BIGINT
);
INSERT INTO campaign (id, closed_at) VALUES (1, NULL);
