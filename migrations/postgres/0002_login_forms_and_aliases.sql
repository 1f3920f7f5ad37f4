-- Which login forms a domain accepts (see tenancy's Login::parse), and domain aliases.
ALTER TABLE domains ADD COLUMN login_forms TEXT NOT NULL DEFAULT 'at,percent,plus,bare';

CREATE TABLE domain_aliases (
    alias      TEXT PRIMARY KEY,
    domain_id  BIGINT NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX domain_aliases_by_domain ON domain_aliases (domain_id);
