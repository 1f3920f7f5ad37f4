-- Login attempts are counted before their check, so attempts made at the same time see each
-- other; a row stays as a failure unless its attempt succeeds. `attempt` tells one attempt's rows
-- from another's made in the same millisecond, so a success removes only its own (NULL for rows
-- recorded after the fact, such as admin sign-in failures).
ALTER TABLE auth_failures ADD COLUMN attempt BIGINT;
