"""The four workspace roles exist as groups from the first migration on (review.roles)."""

from django.db import migrations

ROLES = ["adjuster", "senior_adjuster", "auditor", "operator"]


def create_groups(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for name in ROLES:
        Group.objects.get_or_create(name=name)


class Migration(migrations.Migration):
    dependencies = [("review", "0001_initial"), ("auth", "0012_alter_user_first_name_max_length")]
    operations = [migrations.RunPython(create_groups, migrations.RunPython.noop)]
