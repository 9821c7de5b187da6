"""A PostgreSQL database that sorts text by a language's rules is refused, with how to make a right one."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy.engine import make_url

from archive.db import Database, UnsuitableDatabase
from tests.pg import PostgresServer


def test_a_language_collation_is_refused_before_anything_is_written(postgres: PostgresServer) -> None:
    """en-US (ICU, as a server with an English locale would give by default) orders `bn23x` between
    `BN23` and `BN24`: a prefix search would answer with the wrong patients."""
    server = make_url(postgres.url)
    name = "t_collation_en_us"
    admin = psycopg.connect(host=server.host, port=server.port, user=server.username, dbname="postgres",
                            autocommit=True)  # fmt: skip
    try:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"'.encode())
        admin.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' "
                      "LOCALE 'C.UTF-8'".encode())  # fmt: skip
        url = server.set(database=name).render_as_string(hide_password=False)
        with pytest.raises(UnsuitableDatabase) as refused:
            Database.open(url)
        message = str(refused.value)
        assert "ICU en-US" in message and "--locale=C.UTF-8 --template=template0" in message and name in message
        with psycopg.connect(host=server.host, port=server.port, user=server.username, dbname=name) as conn:
            tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        assert tables == (0,)  # refused before the schema was made
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
        admin.close()


def test_the_test_servers_databases_are_byte_ordered(postgres: PostgresServer) -> None:
    url = postgres.create_database()
    try:
        Database.open(url).dispose()  # accepted: what every other PostgreSQL test runs on
    finally:
        postgres.drop_database(url)
