# syntax=docker/dockerfile:1
#
# A small image of the static tollgate binary: built with musl on Alpine, run from scratch as
# an unprivileged user. The image holds no CA certificates because tollgate needs none: its
# upstream client and reqwest (OAuth) trust Mozilla's roots compiled into the binary
# (webpki-roots); extra roots go in [routing] ca_file.
#
#   docker build -t tollgate .
#   docker run -d --name tollgate -p 8000:8000 -v tollgate-data:/var/lib/tollgate \
#     -e TOLLGATE_ADMIN_PASSWORD='change-me-please' -e OPENROUTER_API_KEY=sk-or-… tollgate
#
# With a configuration file, give the whole command:
#   docker run … -v "$PWD/config.toml:/etc/tollgate/config.toml:ro" tollgate \
#     serve --listen 0.0.0.0:8000 --db /var/lib/tollgate/tollgate.db --config /etc/tollgate/config.toml
# The admin commands run in the same container: docker exec tollgate tollgate user list
# (the binary is /usr/local/bin/tollgate and the working directory the database's).

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-alpine AS build
# musl-dev: the C runtime and headers for the C parts (SQLite, mimalloc, ring).
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
# On Alpine the default target is musl, linked statically.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -D -m 0755 target/release/tollgate /out/usr/local/bin/tollgate
# What scratch lacks: a user to run as, a state directory it owns, /tmp.
RUN mkdir -p /out/etc /out/var/lib/tollgate /out/tmp \
    && echo 'tollgate:x:10001:10001:tollgate:/var/lib/tollgate:/sbin/nologin' > /out/etc/passwd \
    && echo 'tollgate:x:10001:' > /out/etc/group \
    && chmod 1777 /out/tmp

FROM scratch
COPY --from=build /out/etc /etc
COPY --from=build /out/tmp /tmp
COPY --from=build /out/usr/local/bin/tollgate /usr/local/bin/tollgate
# A named volume mounted here starts as a copy of this directory, owned by the service user;
# a bind mount must be writable by uid 10001.
COPY --from=build --chown=10001:10001 /out/var/lib/tollgate /var/lib/tollgate
ENV PATH=/usr/local/bin
USER 10001:10001
WORKDIR /var/lib/tollgate
VOLUME ["/var/lib/tollgate"]
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["serve", "--listen", "0.0.0.0:8000", "--db", "/var/lib/tollgate/tollgate.db"]
