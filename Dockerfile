# carhub: one image for the API (gunicorn), the consumer and the one-shot migration.
# Build: docker build -t carhub .    Run the whole stack: docker compose up
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLASK_APP=app:create_app \
    CARHUB_INSTANCE_DIR=/app/instance \
    PORT=8000

WORKDIR /app

# Dependencies first, so a code change does not reinstall them. Every pin ships a
# manylinux wheel (psycopg[binary], argon2-cffi), so slim needs no compiler.
COPY requirements.txt ./
RUN pip install -r requirements.txt

# A user of our own: the app never runs as root, and cannot rewrite its own code
# (root owns /app); only instance/ (embedded-mode files) is the app's to write.
RUN groupadd --system carhub \
    && useradd --system --gid carhub --home-dir /app --no-create-home --shell /usr/sbin/nologin carhub
COPY . .
RUN mkdir -p /app/instance && chown carhub:carhub /app/instance
USER carhub

EXPOSE 8000

# slim has no curl: ask /health with the standard library. A 503 (database down, or
# cache/broker degraded) raises, so the container reports unhealthy.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]

# gunicorn.conf.py binds 0.0.0.0:$PORT; WEB_CONCURRENCY and GUNICORN_THREADS size it.
CMD ["gunicorn", "-c", "gunicorn.conf.py", "app:create_app()"]
