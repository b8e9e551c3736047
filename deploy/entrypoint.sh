#!/bin/sh
# Image entrypoint: read secrets from files, then run the command (snapshoe serve orders, ...).
#
# For each NAME below, SNAPSHOE_NAME_FILE=/path sets SNAPSHOE_NAME to that file's content, so
# secrets come from mounted files (compose secrets, Kubernetes Secret volumes), never from the
# image. The JWT keys need nothing here: SNAPSHOE_JWT_*_KEY_FILE are paths the app reads itself.
set -eu

for name in INTERNAL_TOKEN PG_SECRET_KEY DB_PASSWORD REDIS_URL AMQP_URL; do
    file_var="SNAPSHOE_${name}_FILE"
    eval "file=\${$file_var:-}"
    [ -n "$file" ] || continue
    eval "direct=\${SNAPSHOE_${name}:-}"
    if [ -n "$direct" ]; then
        echo "entrypoint: set SNAPSHOE_${name} or ${file_var}, not both" >&2
        exit 1
    fi
    if [ ! -r "$file" ]; then
        echo "entrypoint: ${file_var}=${file} is not a readable file" >&2
        exit 1
    fi
    # $(...) drops trailing newlines, as a secret file usually ends with one.
    value="$(cat "$file")"
    export "SNAPSHOE_${name}=${value}"
    unset "$file_var"
done

exec "$@"
