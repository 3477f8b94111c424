# The production image: one image for web, worker and beat (see compose.yaml).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 CLAIMPROOF_VAR_DIR=/var/lib/claimproof
WORKDIR /app
COPY pyproject.toml README.md ./
COPY config config
COPY ledger ledger
COPY claims claims
COPY jobs jobs
COPY review review
COPY audit audit
COPY payments payments
COPY claimproof_cli claimproof_cli
COPY templates templates
COPY manage.py ./
RUN pip install --no-cache-dir . \
    && useradd --system --home /var/lib/claimproof claimproof \
    && mkdir -p /var/lib/claimproof \
    && DJANGO_SETTINGS_MODULE=config.settings SECRET_KEY=build python manage.py collectstatic --noinput \
    && chown -R claimproof /var/lib/claimproof
USER claimproof
EXPOSE 8000
CMD ["gunicorn", "config.wsgi", "--bind=0.0.0.0:8000", "--workers=4", "--threads=4"]
