-- Bulletins (issue 21 item 4): a notice an admin posts once into every mailbox of one domain
-- (domain_id) or of all domains (domain_id NULL). Mailboxes whose user was created after due_at
-- never get it. bulletin_deliveries records each mailbox that got it, written in the same
-- transaction as the message, so a delivery interrupted mid-way resumes without duplicates and
-- several frontends delivering at once give each mailbox one copy.
--
-- Times are Unix milliseconds. state: scheduled (not yet done), delivered, cancelled.
CREATE TABLE bulletins (
    id           BIGSERIAL PRIMARY KEY,
    domain_id    BIGINT NULL REFERENCES domains(id) ON DELETE CASCADE,
    subject      TEXT NOT NULL,
    body         TEXT NOT NULL,
    due_at       BIGINT NOT NULL,
    author       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'scheduled',
    delivered_at BIGINT NULL,
    recipients   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX bulletins_due ON bulletins (state, due_at);

CREATE TABLE bulletin_deliveries (
    bulletin_id BIGINT NOT NULL REFERENCES bulletins(id) ON DELETE CASCADE,
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (bulletin_id, user_id)
);
CREATE INDEX bulletin_deliveries_by_user ON bulletin_deliveries (user_id);
