#!/bin/sh
# First start of the compose PostgreSQL: Zixly's login roles with their passwords (from the
# env file). `zixly db bootstrap` (the migrate service) then sets their options, creates the
# database and pgvector; it never changes a password.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v owner_pw="$ZIXLY_OWNER_PASSWORD" \
    -v app_pw="$ZIXLY_APP_PASSWORD" \
    -v staff_pw="$ZIXLY_STAFF_PASSWORD" <<'SQL'
CREATE ROLE zixly_owner LOGIN PASSWORD :'owner_pw';
CREATE ROLE zixly_app LOGIN PASSWORD :'app_pw';
CREATE ROLE zixly_staff LOGIN PASSWORD :'staff_pw';
SQL
