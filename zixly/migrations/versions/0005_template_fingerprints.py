"""Template fingerprints: what Zixly last wrote for each template workflow of an instance.

Revision ID: 0005_template_fingerprints
Revises: 0004_data_flows
Create Date: 2026-11-27

``n8n_instances.template_fingerprints`` maps a template workflow's name to
``{"workflow_id", "template", "deployed"}``: the n8n workflow id Zixly wrote, the fingerprint
of the rendered template and that of the workflow as n8n stored it (read back). A redeploy
upgrades a template workflow in place only while it still matches ``deployed`` (nobody
edited it); see zixly/provisioning/fingerprints.py. Kept in Zixly's own database rather than
in n8n (a tag, say) so that nothing in the customer's editor can change or remove it, and
two fingerprints plus an id fit where an n8n tag name (at most 24 characters) would not.
Only the staff role reads it: the application role's column grants stay as they were.
"""

from alembic import op

from zixly.db.migrate import exec_script

revision = "0005_template_fingerprints"
down_revision = "0004_data_flows"
branch_labels = None
depends_on = None


def upgrade() -> None:
    exec_script(
        op,
        "ALTER TABLE n8n_instances\n"
        "    ADD COLUMN template_fingerprints JSONB DEFAULT '{}'::jsonb NOT NULL,\n"
        "    ADD CONSTRAINT n8n_instances_template_fingerprints_is_object\n"
        "        CHECK (jsonb_typeof(template_fingerprints) = 'object');\n",
    )


def downgrade() -> None:
    exec_script(op, "ALTER TABLE n8n_instances DROP COLUMN IF EXISTS template_fingerprints;\n")
