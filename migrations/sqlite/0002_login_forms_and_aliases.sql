-- Which login forms a domain accepts (see tenancy's Login::parse), and domain aliases.
ALTER TABLE domains ADD COLUMN login_forms TEXT NOT NULL DEFAULT 'at,percent,plus,bare';

CREATE TABLE domain_aliases (
    alias      TEXT PRIMARY KEY,
    domain_id  INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL
);
