#!/usr/bin/env bash
# Checks a built Cairn image the way an operator would use it:
#
#   docker build -t cairn .
#   bash deploy/smoke-image.sh cairn
#
# 1. the binary runs (`--version`), and the data directory is in the image, owned by nonroot;
# 2. with the image's defaults (0.0.0.0:8443, no certificate) it refuses to serve plain HTTP,
#    naming the settings that fix it;
# 3. with a generated certificate it serves HTTPS as the nonroot user, with its state in a
#    named volume (signing key, database), and answers /healthz, /readyz and the public keys;
# 4. stopped with SIGTERM it drains and exits 0; started again on the same volume it keeps its
#    signing key;
# 5. behind a TLS-terminating proxy (CAIRN_INSECURE_HTTP=true) it serves plain HTTP.
#
# Settings (environment):
#   CONTAINER_ENGINE  the engine command, default `docker` (e.g. `podman`)
#   SMOKE_PORT        the host port to publish to (default 18443)
#   SMOKE_NETWORK     `host` to run on the host's network instead of publishing a port (the
#                     server then listens on SMOKE_PORT itself)
# Needs openssl and curl on the host. Removes the containers and volume it made.
set -euo pipefail

image=${1:?usage: smoke-image.sh IMAGE}
read -r -a engine <<< "${CONTAINER_ENGINE:-docker}"
port=${SMOKE_PORT:-18443}
name=cairn-smoke-$$
volume=cairn-smoke-$$
work=$(mktemp -d)

cleanup() {
    "${engine[@]}" rm -f "$name" > /dev/null 2>&1 || true
    "${engine[@]}" volume rm -f "$volume" > /dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    "${engine[@]}" logs "$name" 2>&1 | tail -20 >&2 || true
    exit 1
}
pass() { echo "ok: $*"; }

# Where the server listens inside the container, and how the host reaches it.
if [ "${SMOKE_NETWORK:-}" = host ]; then
    net=(--network host -e "CAIRN_LISTEN=0.0.0.0:$port")
else
    net=(-p "127.0.0.1:$port:8443")
fi

# 1. The binary runs.
version=$("${engine[@]}" run --rm "$image" --version)
[[ $version == cairn\ * ]] || fail "--version printed '$version'"
pass "$version"

# The data directory is in the image, owned by the nonroot user: Docker creates a volume's
# mount point owned by root when the image lacks it, and the server could not write there.
"${engine[@]}" create --name "$name" "$image" > /dev/null
datadir=$("${engine[@]}" export "$name" | tar -tvf - --numeric-owner | awk '$NF == "var/lib/cairn/"')
"${engine[@]}" rm "$name" > /dev/null
[[ $datadir == drwx------\ 65532/65532\ * ]] || fail "/var/lib/cairn in the image: '${datadir:-missing}'"
pass "/var/lib/cairn is in the image, mode 0700, owned by uid 65532"

# 2. Defaults without a certificate: refused, with the reason.
if out=$("${engine[@]}" run --rm "$image" 2>&1); then
    fail "the server started on 0.0.0.0 without TLS"
fi
grep -q "refusing to serve plain HTTP" <<< "$out" || fail "no reason given: $out"
grep -q "CAIRN_TLS_CERT_FILE" <<< "$out" || fail "the reason does not name the settings: $out"
pass "refuses plain HTTP on 0.0.0.0 and names CAIRN_TLS_CERT_FILE / CAIRN_INSECURE_HTTP"

# 3. HTTPS with a generated certificate, state in a named volume.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2> /dev/null
# The container's user (uid 65532) must read them; the directory is this run's alone.
chmod 0755 "$work"
chmod 0644 "$work/cert.pem" "$work/key.pem"

start() {
    "${engine[@]}" run -d --name "$name" "${net[@]}" -v "$volume:/var/lib/cairn" -v "$work:/etc/cairn/tls:ro" \
        -e CAIRN_TLS_CERT_FILE=/etc/cairn/tls/cert.pem -e CAIRN_TLS_KEY_FILE=/etc/cairn/tls/key.pem \
        -e CAIRN_SHUTDOWN_DRAIN_SECS=1 "$@" "$image" > /dev/null
}

wait_ready() {
    local url=$1
    shift
    for _ in $(seq 1 100); do
        if curl -fsS "$@" "$url/readyz" > /dev/null 2>&1; then
            return 0
        fi
        "${engine[@]}" inspect -f '{{.State.Running}}' "$name" 2> /dev/null | grep -q true || fail "the container stopped"
        sleep 0.2
    done
    fail "not ready at $url after 20 s"
}

base=https://127.0.0.1:$port
tls=(--cacert "$work/cert.pem")
start
wait_ready "$base" "${tls[@]}"
curl -fsS "${tls[@]}" "$base/healthz" > /dev/null || fail "/healthz"
hsts=$(curl -fsS -D - -o /dev/null "${tls[@]}" "$base/healthz" | tr -d '\r' | grep -i '^strict-transport-security:' || true)
[ -n "$hsts" ] || fail "no Strict-Transport-Security header over TLS"
keys=$(curl -fsS "${tls[@]}" "$base/.well-known/cairn/signing-keys")
key_id=$(grep -o '"ed25519:[0-9a-f]*"' <<< "$keys" | head -1)
[ -n "$key_id" ] || fail "no signing key published: $keys"
status=$(curl -sS -o /dev/null -w '%{http_code}' "${tls[@]}" "$base/api/v1/models")
[ "$status" = 401 ] || fail "an anonymous API call got $status, not 401"
user=$("${engine[@]}" inspect -f '{{.Config.User}}' "$name")
[ "$user" = "nonroot:nonroot" ] || fail "runs as '$user'"
pass "serves HTTPS as $user with HSTS; /healthz, /readyz, signing key $key_id; anonymous API calls get 401"

# 4. SIGTERM drains and exits 0; the volume keeps the state.
"${engine[@]}" stop -t 30 "$name" > /dev/null
code=$("${engine[@]}" inspect -f '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || fail "exit code $code after SIGTERM"
"${engine[@]}" logs "$name" 2>&1 | grep -q '"stopped"' || fail "no orderly stop in the log"
"${engine[@]}" rm "$name" > /dev/null
start
wait_ready "$base" "${tls[@]}"
again=$(curl -fsS "${tls[@]}" "$base/.well-known/cairn/signing-keys" | grep -o '"ed25519:[0-9a-f]*"' | head -1)
[ "$again" = "$key_id" ] || fail "the signing key changed across restarts: $key_id, then $again"
"${engine[@]}" rm -f "$name" > /dev/null
pass "SIGTERM drains and exits 0; a restart on the same volume keeps signing key $key_id"

# 5. Behind a TLS-terminating proxy.
"${engine[@]}" run -d --name "$name" "${net[@]}" -v "$volume:/var/lib/cairn" -e CAIRN_INSECURE_HTTP=true \
    "$image" > /dev/null
wait_ready "http://127.0.0.1:$port"
"${engine[@]}" rm -f "$name" > /dev/null
pass "CAIRN_INSECURE_HTTP=true serves plain HTTP for a proxy in front"

echo "image $image: all checks passed"
