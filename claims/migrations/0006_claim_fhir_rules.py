from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("claims", "0005_dashboard_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="claim",
            name="fhir_rules",
            field=models.PositiveSmallIntegerField(
                default=0,
                help_text="The FHIR validation rules (fhir_validation.RULES_VERSION) intake "
                "checked the Bundle under; 0: unknown. The first verification run trusts the "
                "same rules.",
            ),
        ),
    ]
