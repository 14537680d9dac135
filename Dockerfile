# The worker image: the online side only (onnxruntime, aiokafka), no torch.
#
#   docker build -t streamer-worker:cpu .
#   docker build -t streamer-worker:gpu --build-arg VARIANT=gpu .
#
# The GPU variant needs no CUDA base image: onnxruntime-gpu's `cuda` and `cudnn`
# extras bring the CUDA 12 runtime and cuDNN 9 as pip wheels, the scorer preloads
# them (onnxruntime.preload_dlls), and the NVIDIA container toolkit injects the
# driver at run time. Run it with a GPU: `docker run --gpus all ...`.
FROM python:3.11-slim

ARG VARIANT=cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

WORKDIR /src
COPY pyproject.toml README.md ./
COPY models ./models
COPY streamer ./streamer

# `pip install .` builds a wheel, and the wheel carries only Python files, so the
# shipped bundles (streamer/bundles/*) are copied next to the installed package,
# where streamer.bundle.DEFAULT_BUNDLES looks for them.
#
# GPU: onnxruntime (CPU) is a base dependency and onnxruntime-gpu installs the same
# `onnxruntime` Python package; with both present whichever was unpacked last wins
# and removing either breaks the other. So install the extra, then drop both and
# reinstall the GPU build alone, with its CUDA/cuDNN wheels and NVML bindings
# (nvidia-ml-py, for GPU utilisation).
RUN set -eux; \
    if [ "$VARIANT" = "gpu" ]; then \
        pip install ".[gpu]"; \
        pip uninstall -y onnxruntime onnxruntime-gpu; \
        pip install "onnxruntime-gpu[cuda,cudnn]>=1.20" nvidia-ml-py; \
    elif [ "$VARIANT" = "cpu" ]; then \
        pip install .; \
    else \
        echo "VARIANT must be cpu or gpu, not $VARIANT" >&2; exit 1; \
    fi; \
    pkg="$(python -c 'import pathlib, streamer; print(pathlib.Path(streamer.__file__).parent)')"; \
    cp -r streamer/bundles "$pkg/"; \
    python -c "import onnxruntime as ort; print('onnxruntime', ort.__version__, ort.get_available_providers())"; \
    streamer --help >/dev/null

# Run as an unprivileged user; /app holds the TensorRT engine cache (.cache/trt).
RUN useradd --uid 10001 --create-home --home-dir /app streamer
WORKDIR /app
USER 10001
ENV STREAMER_TRT_CACHE_DIR=/app/.cache/trt \
    STREAMER_METRICS_PORT=9108
EXPOSE 9108

# /healthz is 200 while the worker consumes and scores, 503 with the reason otherwise.
# Only meaningful for `worker`: services running another command disable it (compose.yaml).
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=4 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('STREAMER_METRICS_PORT', '9108'), timeout=2)"

ENTRYPOINT ["streamer"]
CMD ["worker"]
