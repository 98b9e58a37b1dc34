# The runner as an image: the `runner` binary, the plugins, and the plugins already compiled for
# this runner, so a pod starts scoring in milliseconds instead of paying Cranelift's 16-24 s.
# What the image holds is made by `cargo xtask dist`, which the tests run too.
#
#   docker build -t etl-runner .
#   docker run --rm etl-runner --help

FROM rust:1.95-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc g++ make && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN rustup target add wasm32-wasip2 && cargo xtask dist /dist

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin runner
# Owned by root and read-only to the runner's user: the runner trusts a compiled-plugin cache
# only when no one else can write it.
COPY --from=build /dist /opt/runner
ENV PATH=/opt/runner/bin:$PATH \
    RUNNER_CACHE_DIR=/opt/runner/cache
WORKDIR /opt/runner
USER runner
ENTRYPOINT ["runner"]
CMD ["--help"]
