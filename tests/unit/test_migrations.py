"""The Alembic migrations build exactly the schema the models declare."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app.store.migrate import upgrade
from app.store.models import Base


def test_migrations_match_the_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.sqlite'}"
    upgrade(url)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        tables = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    assert diff == []
    assert {"resource", "resource_version", "idx_token", "idx_reference", "res_compartment"} <= tables



def test_0005_drops_the_rows_of_derived_parameters_and_keeps_the_rest(tmp_path: Path) -> None:
    import importlib

    from app.store.indexer import INDEXER
    from app.store.registry import profile_json

    url = f"sqlite:///{tmp_path / 'm.sqlite'}"
    upgrade(url, "0004")
    engine = sa.create_engine(url)
    cols = "(res_pk, rtype, param)"
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO resource (pk, rtype, rid, version, lu, deleted) VALUES (1, 'Observation', 'o', 1, 0, 0)"))
        for table, param in [("idx_token", "code"), ("idx_token", "combo-code"), ("idx_token", "combo-code-value-quantity$0"),
                             ("idx_token", "code-value-quantity$0"), ("idx_quantity", "combo-value-quantity"),
                             ("idx_quantity", "value-quantity"), ("idx_quantity", "combo-code-value-quantity$1")]:
            extra = ", value, low, high) VALUES (1, 'Observation', :p, 1, 1, 1)" if table == "idx_quantity" else ") VALUES (1, 'Observation', :p)"
            conn.execute(sa.text(f"INSERT INTO {table} {cols[:-1]}{extra}"), {"p": param})
        # another type's parameter of the same name is not Observation's
        conn.execute(sa.text(f"INSERT INTO idx_token {cols} VALUES (1, 'Other', 'combo-code')"))
    engine.dispose()
    upgrade(url)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        left = {(t, rt, p) for t in ("idx_token", "idx_quantity")
                for rt, p in conn.execute(sa.text(f"SELECT rtype, param FROM {t}"))}
    engine.dispose()
    assert left == {("idx_token", "Observation", "code"), ("idx_token", "Observation", "code-value-quantity$0"),
                    ("idx_quantity", "Observation", "value-quantity"), ("idx_token", "Other", "combo-code")}
    # The migration's fixed list is what the indexer derives from the shipped definitions.
    m = importlib.import_module("app.store.migrations.versions.0005_derived_param_rows")
    defs = profile_json("search_parameters.json")["params"]
    want: dict[str, set[str]] = {}
    for (rtype, code), _ in INDEXER.derived.items():
        assert rtype == "Observation"
        p = defs[rtype][code]
        if p["type"] == "composite":
            for i, c in enumerate(p["components"]):
                want.setdefault({"token": "idx_token", "quantity": "idx_quantity"}[c["type"]], set()).add(f"{code}${i}")
        else:
            want.setdefault({"token": "idx_token", "quantity": "idx_quantity"}[p["type"]], set()).add(code)
    assert {t: set(v) for t, v in m._ROWS.items()} == want
