#!/usr/bin/env bash
# podman as catbot's image build and test use it, on a machine without internet or Docker:
#  1. installs podman, runc and debootstrap from Debian's packages when missing (root only);
#  2. makes sure the Dockerfile's base image is in podman's storage (local-base.sh makes a
#     stand-in from Debian bookworm when it is not: nothing is pulled);
#  3. runs `podman "$@"` with deploy/image/containers.conf.
#
#   deploy/image/podman.sh build --format docker --network none -t catbot .
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

missing=()
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || missing+=(runc)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if ((${#missing[@]})); then
    if [ "$(id -u)" != 0 ]; then
        echo "podman.sh: missing ${missing[*]}; install them (apt-get install -y ${missing[*]})" >&2
        exit 1
    fi
    echo "podman.sh: installing ${missing[*]} from Debian's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null || true  # a dead extra source must not stop Debian's own
    apt-get install -y -q "${missing[@]}" >/dev/null
    command -v podman >/dev/null || { echo "podman.sh: podman did not install" >&2; exit 1; }
fi

export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
if [ "${1:-}" = build ]; then
    base=$(sed -n -E 's/^ARG PYTHON_IMAGE=(.*)$/\1/p' "$here/../../Dockerfile")
    "$here/local-base.sh" "$base" >&2
fi
exec podman "$@"
