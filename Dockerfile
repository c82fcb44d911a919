# rlscale: the live controller (`rlscale control`) and the GPU exporter (`rlscale gpu-exporter`).
#   docker build -t ghcr.io/rlscale/rlscale:0.1.0 .
# CPU-only torch (a package dependency for training; the controller itself never imports it: it
# runs each checkpoint's small MLP in numpy), the shipped checkpoints under
# /opt/rlscale/checkpoints, a non-root user, no shell entrypoint.
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir --prefix=/install --index-url https://download.pytorch.org/whl/cpu "torch>=2.3"
COPY pyproject.toml README.md ./
COPY rlscale ./rlscale
RUN pip install --no-cache-dir --prefix=/install --extra-index-url https://download.pytorch.org/whl/cpu .

FROM python:3.11-slim
# glibc's per-thread malloc arenas inflate RSS of a threaded Python process; two are plenty.
ENV MALLOC_ARENA_MAX=2 \
    OMP_NUM_THREADS=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /install /usr/local
COPY checkpoints /opt/rlscale/checkpoints
USER 65532:65532
EXPOSE 9102 9400
ENTRYPOINT ["rlscale"]
CMD ["control", "--config", "/etc/rlscale/controller.yaml"]
