#!/usr/bin/env bash
# Make a stand-in for docker.io/library/python:3.11-slim without any registry but Debian's:
# debootstrap bookworm (whose python3 is 3.11) from the mirror apt already uses, then
# `podman import` under the official image's name, so the Dockerfile builds unchanged and
# offline. Skipped when an image of that name is already in podman's storage (the real one,
# or an earlier stand-in).
#
#   deploy/image/local-base.sh [IMAGE]      (as root; needs podman and debootstrap)
set -euo pipefail

IMAGE=${1:-docker.io/library/python:3.11-slim}
SUITE=bookworm
# Bump when the stand-in changes: an older stand-in is then made again (a real image, which
# has no such label, is always kept).
STANDIN=catbot-standin-1

if podman image exists "$IMAGE"; then
    label=$(podman image inspect --format '{{index .Labels "org.catbot.local-base"}}' "$IMAGE")
    if [ -z "$label" ] || [ "$label" = "<no value>" ] || [ "$label" = "$STANDIN" ]; then
        echo "local-base: $IMAGE is already in podman's storage"
        exit 0
    fi
    echo "local-base: replacing an older stand-in ($label)"
fi
command -v debootstrap >/dev/null || {
    echo "local-base: debootstrap is missing (apt-get install -y debootstrap)" >&2
    exit 1
}

# The Debian mirror this machine's apt uses: deb822 sources first, then one-line sources.
mirror=$(
    { grep -h -E '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -v -- '-security' || true
      grep -h -E '^deb +(\[[^]]*\] +)?https?://' /etc/apt/sources.list 2>/dev/null \
        | sed -E 's/^deb +(\[[^]]*\] +)?//' | awk '{print $1}' | grep -v -- '-security' || true
    } | grep -m1 -E '/debian/?$' || true
)
mirror=${mirror:-http://deb.debian.org/debian}

root=$(mktemp -d /var/tmp/catbot-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "local-base: debootstrap $SUITE from $mirror (about a minute)"
# minbase + what the official slim image offers the Dockerfile: python3 with venv/ensurepip
# (python3-venv brings pip's wheel) and CA certificates.
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$root/rootfs" "$mirror" >"$root/debootstrap.log" 2>&1 || {
    tail -n 30 "$root/debootstrap.log" >&2
    exit 1
}

r=$root/rootfs
# The official image has its python in /usr/local/bin: python, python3, pip, pip3.
for name in python python3 python3.11; do ln -sf /usr/bin/python3.11 "$r/usr/local/bin/$name"; done
# Nothing the image needs: package caches, lists, docs.
rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/* "$r"/usr/share/doc/* \
    "$r"/usr/share/man/* "$r"/usr/share/locale/* "$r"/var/log/*.log

tar -C "$r" --numeric-owner -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PYTHON_VERSION=3.11' \
    --change "LABEL org.catbot.local-base=$STANDIN" \
    --change 'CMD ["python3"]' \
    - "$IMAGE" >/dev/null
echo "local-base: imported $IMAGE"
