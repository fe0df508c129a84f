# nats-server 2.15.1, the static binary pinned by scripts/setup.sh; built by scripts/images.sh.
FROM scratch
COPY rootfs/ /
EXPOSE 4222 7422 8222
ENTRYPOINT ["/bin/nats-server"]
