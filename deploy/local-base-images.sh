#!/usr/bin/env bash
# Local stand-ins for the Containerfile's base images, for a machine that
# reaches Debian's packages but no container registry (podman pull fails):
#
#   localhost/deploy-test/debian:bookworm-slim   debootstrap's minbase of bookworm
#   localhost/deploy-test/rust:bookworm          the same, with gcc, libc6-dev and
#                                                this machine's Rust toolchain
#
# Then: DEPLOY_RUST_IMAGE=localhost/deploy-test/rust:bookworm \
#       DEPLOY_RUNTIME_IMAGE=localhost/deploy-test/debian:bookworm-slim bash deploy/test.sh
#
# The builder also gets this machine's CA bundle, so that cargo inside it
# trusts what the machine trusts (a proxy's own CA, for one). Root only; about
# two minutes. These are test stand-ins: publish images built on the real
# bases. Already present images are kept (DEPLOY_REBUILD_BASES=1 redoes them).
set -euo pipefail

RUNTIME=localhost/deploy-test/debian:bookworm-slim
BUILDER=localhost/deploy-test/rust:bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ "${DEPLOY_REBUILD_BASES:-}" != 1 ] && podman image exists "$RUNTIME" && podman image exists "$BUILDER"; then
  echo "base images already there: $RUNTIME, $BUILDER"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "error: debootstrap and chroot need root" >&2
  exit 1
fi
command -v debootstrap >/dev/null 2>&1 \
  || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "debootstrap bookworm (minbase) from $MIRROR"
debootstrap --variant=minbase bookworm "$WORK/root" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
  || { tail -n 20 "$WORK/debootstrap.log"; exit 1; }
rm -rf "$WORK/root/var/cache/apt/archives/"*.deb
tar -C "$WORK/root" -c . | podman import --change 'CMD ["bash"]' - "$RUNTIME" >/dev/null

echo "builder: gcc, libc6-dev and the toolchain of $(rustc --version)"
cp /etc/resolv.conf "$WORK/root/etc/resolv.conf"
chroot "$WORK/root" /bin/sh -c 'apt-get update -qq \
  && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev ca-certificates >/dev/null \
  && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb'
cp /etc/ssl/certs/ca-certificates.crt "$WORK/root/etc/ssl/certs/ca-certificates.crt"
mkdir -p "$WORK/root/usr/local/rust"
tar -C "$(rustc --print sysroot)" --exclude=share/doc --exclude=lib/rustlib/src -c . \
  | tar -C "$WORK/root/usr/local/rust" -x
tar -C "$WORK/root" -c . | podman import \
  --change 'ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV CARGO_HOME=/usr/local/cargo' --change 'CMD ["bash"]' - "$BUILDER" >/dev/null
podman images --filter reference='localhost/deploy-test/*'
