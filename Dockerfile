# Cairn in a container: a multi-stage build, a small runtime image, a non-root user.
#
#   docker build -t cairn .
#   docker run -p 8443:8443 -v cairn-data:/var/lib/cairn -v ./tls:/etc/cairn/tls:ro \
#     -e CAIRN_TLS_CERT_FILE=/etc/cairn/tls/cert.pem -e CAIRN_TLS_KEY_FILE=/etc/cairn/tls/key.pem cairn
#
# Behind a TLS-terminating proxy instead: -e CAIRN_INSECURE_HTTP=true (docs/DEPLOYMENT.md).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# aws-lc-rs builds its C code with cmake and a C compiler.
RUN apt-get update && apt-get install -y --no-install-recommends cmake clang pkg-config \
    && rm -rf /var/lib/apt/lists/*
# The data directory, made here for the runtime image's nonroot user (uid 65532): distroless
# has no shell to make it, and a volume mounted where an image has no directory is created
# owned by root, which the server could not write.
RUN install -d -m 0700 -o 65532 -g 65532 /out/state/cairn
COPY . .
RUN cargo build --release --locked -p cairn \
    && install -D -m 0755 target/release/cairn /out/cairn

# Debian's "cc" distroless image: glibc, CA certificates, a nonroot user, no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/cairn /usr/local/bin/cairn
COPY --from=build --chown=65532:65532 /out/state/ /var/lib/
ENV CAIRN_DATA_DIR=/var/lib/cairn \
    CAIRN_LISTEN=0.0.0.0:8443 \
    CAIRN_LOG_FORMAT=json
# The data dir (SQLite, local blobs, the signing key) is a volume owned by the nonroot user.
VOLUME ["/var/lib/cairn"]
USER nonroot:nonroot
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/cairn"]
CMD ["serve"]
