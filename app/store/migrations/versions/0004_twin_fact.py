"""twin facts and stored assessments

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 22:50:00

Twin facts derived from current resource versions (models.TwinFact); RiskAssessments stored by
$simulate with the variables they used (models.TwinAssessment).
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('twin_fact',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('res_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('variable', sa.String(length=32), nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('unit', sa.String(length=32), nullable=False),
    sa.Column('t', sa.BigInteger(), nullable=True),
    sa.Column('t_end', sa.BigInteger(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('flags', sa.String(length=200), nullable=False),
    sa.ForeignKeyConstraint(['res_pk'], ['resource.pk'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('twin_fact', schema=None) as batch_op:
        batch_op.create_index('ix_twin_fact_patient', ['patient_id', 'variable', 't'], unique=False)
        batch_op.create_index('ix_twin_fact_res', ['res_pk'], unique=False)
    op.create_table('twin_assessment',
    sa.Column('ra_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('variables', sa.String(length=1000), nullable=False),
    sa.Column('outdated', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['ra_pk'], ['resource.pk'], ),
    sa.PrimaryKeyConstraint('ra_pk')
    )
    with op.batch_alter_table('twin_assessment', schema=None) as batch_op:
        batch_op.create_index('ix_twin_assessment_patient', ['patient_id', 'outdated'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('twin_assessment', schema=None) as batch_op:
        batch_op.drop_index('ix_twin_assessment_patient')
    op.drop_table('twin_assessment')
    with op.batch_alter_table('twin_fact', schema=None) as batch_op:
        batch_op.drop_index('ix_twin_fact_res')
        batch_op.drop_index('ix_twin_fact_patient')
    op.drop_table('twin_fact')
