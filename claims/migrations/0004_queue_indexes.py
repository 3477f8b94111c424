"""Indexes the adjusters' queue walks from a keyset boundary (review/queue.py).

Plain CREATE INDEX (it also runs on SQLite). On a large live PostgreSQL table, build them with
CREATE INDEX CONCURRENTLY under the same names and mark this migration applied (--fake)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("claims", "0003_provider_reference"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="claim",
            index=models.Index(fields=["created_at", "id"], name="claim_queue_created"),
        ),
        migrations.AddIndex(
            model_name="claim",
            index=models.Index(
                fields=["status", "created_at", "id", "total", "verdict"],
                name="claim_queue_status",
            ),
        ),
        migrations.AddIndex(
            model_name="claim",
            index=models.Index(
                fields=["provider", "created_at", "id"], name="claim_queue_provider"
            ),
        ),
        migrations.AddIndex(
            model_name="claim",
            index=models.Index(
                fields=["provider", "status", "created_at", "id"], name="claim_queue_prov_status"
            ),
        ),
        migrations.AddIndex(
            model_name="claim",
            index=models.Index(fields=["total", "id"], name="claim_queue_total"),
        ),
        migrations.AddIndex(
            model_name="claim",
            index=models.Index(
                fields=["provider_reference"],
                name="claim_queue_reference",
                opclasses=["varchar_pattern_ops"],
            ),
        ),
        migrations.AddIndex(
            model_name="claimcheck",
            index=models.Index(
                condition=models.Q(("outcome", "fail")),
                fields=["name", "claim", "run"],
                name="check_failed_by_name",
            ),
        ),
    ]
