# Two images from source, both static (musl) binaries on an empty base. The sniffer image is
# the last stage, so a build without --target makes it:
#   docker build -t <registry>/tcp-sniffer:0.1.0 .                      (or --target sniffer)
#   docker build --target injector -t <registry>/tcp-sniffer-injector:0.1.0 .
#
# BUILDER_IMAGE: a Debian-based image with rustup and a C compiler (the eBPF build bootstraps
# the nightly toolchain's rust-src and builds bpf-linker itself).
# BINARIES=build compiles in the builder stage. BINARIES=prebuilt takes the binaries that
# `cargo xtask image` builds on the host and copies to target/image/ (for machines where no base
# image can be pulled).
ARG BUILDER_IMAGE=docker.io/library/rust:1-bookworm
ARG BINARIES=build
# The workspace version (`cargo xtask image` passes it); only labels the images.
ARG VERSION=0.1.0

FROM ${BUILDER_IMAGE} AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && rustup toolchain install nightly --profile minimal \
 && rustup target add x86_64-unknown-linux-musl
# ring compiles C for the target; Debian's musl wrapper is named musl-gcc.
ENV CC_x86_64_unknown_linux_musl=musl-gcc
WORKDIR /src
COPY . .
RUN cargo xtask build-ebpf \
 && cargo build --release --locked --target x86_64-unknown-linux-musl --package sniffer --package injector \
 && mkdir /out \
 && cp target/x86_64-unknown-linux-musl/release/sniffer target/x86_64-unknown-linux-musl/release/injector /out/ \
 && cp /etc/ssl/certs/ca-certificates.crt /out/

FROM scratch AS prebuilt
COPY target/image/sniffer target/image/injector target/image/ca-certificates.crt /out/

FROM ${BINARIES} AS binaries

FROM scratch AS injector
ARG VERSION
LABEL org.opencontainers.image.title="tcp-sniffer-injector" \
      org.opencontainers.image.description="Mutating admission webhook adding the tcp-sniffer container" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=binaries /out/injector /injector
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/injector"]
CMD ["serve"]

# The sniffer runs as root inside the container with only NET_RAW and BPF: Kubernetes grants
# added capabilities to UID 0 only (docs/specs/INJECTOR.md).
FROM scratch AS sniffer
ARG VERSION
LABEL org.opencontainers.image.title="tcp-sniffer" \
      org.opencontainers.image.description="eBPF agent capturing TCP packet metadata of a pod" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=binaries /out/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=binaries /out/sniffer /sniffer
ENTRYPOINT ["/sniffer"]
