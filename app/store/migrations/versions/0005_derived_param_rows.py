"""drop the index rows of derived search parameters

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 19:00:00

Observation's combo-* parameters are unions of other parameters (combo-code = code |
component-code, ...): the indexer no longer writes rows for them and search reads the rows of
their sources (app.store.indexer.derived_params). The rows written before are removed here; the
list is fixed as the shipped R4 definitions give it. No schema change. Downgrading does not
write them back: a server older than this revision needs them re-indexed.
"""
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

# table -> parameter row names (composites: one name per component)
_ROWS = {
    'idx_token': ['combo-code', 'combo-data-absent-reason', 'combo-value-concept',
                  'combo-code-value-concept$0', 'combo-code-value-concept$1', 'combo-code-value-quantity$0'],
    'idx_quantity': ['combo-value-quantity', 'combo-code-value-quantity$1'],
}


def upgrade() -> None:
    for table, params in _ROWS.items():
        names = ", ".join(f"'{p}'" for p in params)
        op.execute(f"DELETE FROM {table} WHERE rtype = 'Observation' AND param IN ({names})")


def downgrade() -> None:
    pass
