-- Users (the people of a tenant, managed through the admin API) are not part of the proxies'
-- configuration: writing them must not bump the config version, which would make every
-- proxy of the fleet reload for nothing. Writes to every other configuration table still
-- bump it, by hand-made SQL too.
DROP TRIGGER users_bump ON users;
