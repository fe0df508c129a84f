# Every orchestrator binary in one image (pick one with the command); built by scripts/images.sh
# from the workspace build and the shared libraries it links.
FROM scratch
COPY rootfs/ /
ENV PATH=/bin
ENTRYPOINT []
