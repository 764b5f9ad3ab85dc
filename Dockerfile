# The standalone server: `docker build -t flaregate .` then
#   docker run -p 127.0.0.1:8787:8787 -e FLAREGATE_API_KEYS=... -e FLAREGATE_ADMIN_KEY=... flaregate
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# Dependencies in their own layer: it is rebuilt only when pyproject.toml changes.
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
# hadolint ignore=DL3013
RUN mkdir -p src/flaregate && printf '__version__ = "0"\n' > src/flaregate/__init__.py \
 && pip install ".[local]" && pip uninstall -y flaregate

COPY src/ src/
RUN pip install --no-deps . \
 && useradd --system --uid 10001 --home-dir /data --create-home flaregate \
 && install -d -o flaregate -m 0700 /files

USER 10001
WORKDIR /data
EXPOSE 8787
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8787/health', timeout=4).status != 200)"]
CMD ["flaregate", "serve", "--host", "0.0.0.0", "--port", "8787", "--data-dir", "/data"]
