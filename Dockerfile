FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY policies ./policies
RUN pip install . \
 && useradd --system --uid 10001 --home /var/lib/pms-gateway --create-home gateway

USER gateway
ENV PMS_GATEWAY_DATA_DIR=/var/lib/pms-gateway \
    PMS_GATEWAY_POLICY_PATHS='[/app/policies/default.yaml]' \
    PMS_GATEWAY_LISTEN__HOST=0.0.0.0 \
    PMS_GATEWAY_LOG__FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/_gateway/health', timeout=2); sys.exit(0)" || exit 1
ENTRYPOINT ["pms-gateway"]
CMD ["run"]
