# The fastq image: the package with its web extra, and the example project (deploy/example/proj.py).
# Build: docker build -t fastq .   Run: docker run fastq -A proj worker  (see docs/deploying.md)
FROM python:3.11-slim AS build
# A compiler for the Cython core; only in this stage.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[web]"

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "fastq[web]" && rm -rf /wheels \
    && useradd --create-home --uid 1000 fastq
WORKDIR /app
# Your project goes here (replace the example): `-A proj` imports /app/proj.py.
COPY deploy/example/proj.py /app/proj.py
USER fastq
ENV PYTHONUNBUFFERED=1 PYTHONPATH=/app
ENTRYPOINT ["fastq"]
CMD ["-A", "proj", "worker"]
