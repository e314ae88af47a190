#!/bin/sh
# Serving image entrypoint: runs tritonserver with the given flags (the image's CMD, or the Helm
# chart's args) and locks the admin APIs behind a key read from the environment, so the key is
# never baked into the image or written into a pod spec.
#
#   TRITON_ADMIN_KEY        the key; unset → a random one, i.e. admin APIs unusable (safe default)
#   TRITON_ADMIN_HEADER     HTTP header that must carry it (default admin-key); gRPC clients send
#                           it as metadata `triton-grpc-protocol-<header>` (the server adds the prefix)
#   TRITON_RESTRICTED_APIS  comma-separated Triton API groups to restrict
#                           (default model-repository,shared-memory,logging,trace)
#
# The key ends up on tritonserver's command line: tritonserver 2.51 takes it nowhere else.
set -eu

apis="${TRITON_RESTRICTED_APIS:-model-repository,shared-memory,logging,trace}"
header="${TRITON_ADMIN_HEADER:-admin-key}"
key="${TRITON_ADMIN_KEY:-}"
# The Python backend stubs are children of tritonserver: do not hand them the key.
unset TRITON_ADMIN_KEY

if [ -z "$key" ]; then
    key="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
    echo "entrypoint: TRITON_ADMIN_KEY is not set; $apis are locked with a throwaway key" >&2
fi

# tritonserver parses `<apis>:<header>=<key>`; these characters would split it wrongly.
case "$apis" in
    "" | *[!a-z,-]*)
        echo "entrypoint: TRITON_RESTRICTED_APIS must be comma-separated API names, got '$apis'" >&2
        exit 64 ;;
esac
case "$header" in
    "" | *[!A-Za-z0-9-]*)
        echo "entrypoint: TRITON_ADMIN_HEADER must be letters, digits and '-', got '$header'" >&2
        exit 64 ;;
esac
case "$key" in
    *[!A-Za-z0-9._~+/-]*)
        echo "entrypoint: TRITON_ADMIN_KEY may only hold letters, digits and . _ ~ + / -" >&2
        exit 64 ;;
esac

exec tritonserver "$@" \
    "--http-restricted-api=${apis}:${header}=${key}" \
    "--grpc-restricted-protocol=${apis}:${header}=${key}"
