# wetmap as a container: `docker build -t REGISTRY/wetmap:0.1.0 .`, then `docker run REGISTRY/wetmap:0.1.0 --help`.
#
# The base is Python 3.11 on Debian, not an nvidia/cuda image: torch's CUDA build (pinned in
# constraints.txt) brings the CUDA runtime, cuDNN and NCCL as pip wheels, so a CUDA base would
# only add a second copy (several GB). On a GPU node the NVIDIA container toolkit mounts the
# driver (`docker run --gpus all`, or `nvidia.com/gpu` in a Kubernetes pod); on a node without
# one the same image runs on the CPU. For the cloud detector on the GPU too, swap onnxruntime for
# onnxruntime-gpu (the ONNX_RUNTIME build argument).
FROM python:3.11-slim-bookworm

ARG ONNX_RUNTIME=onnxruntime
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    WETMAP_CACHE=/var/cache/wetmap GDAL_CACHEMAX=512

WORKDIR /opt/wetmap
# Dependencies first, from the pins alone, so a code change does not reinstall torch.
COPY constraints.txt pyproject.toml README.md ./
COPY pipeline/ pipeline/
RUN python -m pip install -c constraints.txt . \
    && if [ "$ONNX_RUNTIME" != onnxruntime ]; then \
         python -m pip uninstall -y onnxruntime && python -m pip install "$ONNX_RUNTIME"; fi \
    && useradd --create-home --uid 1000 wetmap \
    && mkdir -p /var/cache/wetmap /work && chown wetmap /var/cache/wetmap /work
COPY configs/ configs/

USER wetmap
WORKDIR /work
ENTRYPOINT ["wetmap"]
CMD ["--help"]
