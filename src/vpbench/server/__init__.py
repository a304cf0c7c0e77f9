"""Where the databases live: the connection target (a DSN or the embedded server), the
databases vpbench manages, their backups and their maintenance (VACUUM, ANALYZE)."""
