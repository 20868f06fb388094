"""SQL that keeps the database's privileges least, for migrations (0006 and later).

* SECURITY DEFINER functions run as the definer role (NOLOGIN, only the privileges and
  policies the look-ups need), with ``search_path = pg_catalog, public, pg_temp``: the
  session's temporary schema is searched last, never before the real tables (PostgreSQL
  searches ``pg_temp`` first when the path does not name it), and nobody but PUBLIC's
  revoked EXECUTE reaches them except the roles named.
* ``FORCE ROW LEVEL SECURITY`` on every table with row-level security, with one policy for
  the owner that holds only in the owner's own sessions (``session_user = current_user``:
  migrations, seeding, fixtures). Code that runs as the owner in another role's session (a
  SECURITY DEFINER function or a view it owns) sees no row.

A migration that creates a SECURITY DEFINER function ends with ``definer_function(...)``
for it; one that creates a table with row-level security ends with ``force_rls()``.
``tests/test_db_privileges.py`` checks both over the whole database.
"""

from __future__ import annotations

from collections.abc import Iterable

SAFE_SEARCH_PATH = "pg_catalog, public, pg_temp"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def definer_function(signature: str, definer: str, execute_to: Iterable[str]) -> str:
    """Harden one SECURITY DEFINER function (``signature`` like ``f(text, text)``): safe
    search path, owned by the definer role, EXECUTE only for ``execute_to``."""
    grantees = ", ".join(_ident(role) for role in execute_to)
    function = f"public.{signature}"
    # ALTER ... OWNER TO needs the new owner to hold CREATE on the schema at that moment.
    return f"""
    ALTER FUNCTION {function} SET search_path = {SAFE_SEARCH_PATH};
    REVOKE ALL ON FUNCTION {function} FROM PUBLIC;
    GRANT CREATE ON SCHEMA public TO {_ident(definer)};
    ALTER FUNCTION {function} OWNER TO {_ident(definer)};
    REVOKE CREATE ON SCHEMA public FROM {_ident(definer)};
    GRANT EXECUTE ON FUNCTION {function} TO {grantees};
    """


def force_rls() -> str:
    """FORCE row-level security on every public table that has it enabled, with the
    owner-session policy (idempotent)."""
    return """
    DO $force$
    DECLARE t record;
    BEGIN
        FOR t IN
            SELECT c.relname, pg_catalog.pg_get_userbyid(c.relowner) AS owner
            FROM pg_catalog.pg_class c
            WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
              AND c.relrowsecurity
        LOOP
            EXECUTE format('ALTER TABLE public.%I FORCE ROW LEVEL SECURITY', t.relname);
            EXECUTE format('DROP POLICY IF EXISTS owner_session ON public.%I', t.relname);
            EXECUTE format(
                'CREATE POLICY owner_session ON public.%I TO %I '
                'USING (session_user = current_user) WITH CHECK (session_user = current_user)',
                t.relname, t.owner);
        END LOOP;
    END
    $force$;
    """


def unforce_rls() -> str:
    return """
    DO $unforce$
    DECLARE t record;
    BEGIN
        FOR t IN
            SELECT c.relname FROM pg_catalog.pg_class c
            WHERE c.relnamespace = 'public'::regnamespace AND c.relforcerowsecurity
        LOOP
            EXECUTE format('DROP POLICY IF EXISTS owner_session ON public.%I', t.relname);
            EXECUTE format('ALTER TABLE public.%I NO FORCE ROW LEVEL SECURITY', t.relname);
        END LOOP;
    END
    $unforce$;
    """
