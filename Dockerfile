# Builds both binaries once; `--target api` or `--target broker` picks the image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Queries are checked against the committed .sqlx/ data, not a live database.
ENV SQLX_OFFLINE=true
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --package parley-api --package parley-broker \
 && mkdir -p /out && cp target/release/parley-api target/release/parley-broker /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 parley
USER parley

FROM runtime AS api
COPY --from=build /out/parley-api /usr/local/bin/parley-api
ENV PARLEY_API_LISTEN=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK CMD curl -fsS http://127.0.0.1:8080/ready || exit 1
ENTRYPOINT ["parley-api"]

FROM runtime AS broker
COPY --from=build /out/parley-broker /usr/local/bin/parley-broker
ENV PARLEY_BROKER_LISTEN=0.0.0.0:8081
EXPOSE 8081
HEALTHCHECK CMD curl -fsS http://127.0.0.1:8081/ready || exit 1
ENTRYPOINT ["parley-broker"]
