"""Approve with repair (evaluation/repair.py): submissions.repair, the status 'repairing' and the stage 'repair'

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 11:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUSES = ('queued', 'inspecting', 'finetuning', 'evaluating', 'deciding', 'done', 'rejected', 'failed', 'cancelled')
_STATUSES_AFTER = ('queued', 'inspecting', 'finetuning', 'evaluating', 'deciding', 'repairing', 'done', 'rejected',
                   'failed', 'cancelled')
_STAGES = ('inspect', 'finetune', 'evaluate', 'decide')
_STAGES_AFTER = ('inspect', 'finetune', 'evaluate', 'decide', 'repair')


def _check(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _replace_check(table: str, column: str, name: str, values: tuple[str, ...]) -> None:
    with op.batch_alter_table(table, schema=None) as batch_op:
        batch_op.drop_constraint(op.f(name), type_='check')
        batch_op.create_check_constraint(op.f(name), _check(column, values))


def upgrade() -> None:
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('repair', sa.String(length=8), nullable=True))
    _replace_check('submissions', 'status', 'ck_submissions_status', _STATUSES_AFTER)
    _replace_check('stage_runs', 'stage', 'ck_stage_runs_stage', _STAGES_AFTER)


def downgrade() -> None:
    # a submission still repairing has its verdict: as far as the older schema knows it is done; the runs of
    # the repair stage have no place in it
    op.execute("UPDATE submissions SET status = 'done' WHERE status = 'repairing'")
    op.execute("DELETE FROM stage_runs WHERE stage = 'repair'")
    _replace_check('stage_runs', 'stage', 'ck_stage_runs_stage', _STAGES)
    _replace_check('submissions', 'status', 'ck_submissions_status', _STATUSES)
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.drop_column('repair')
