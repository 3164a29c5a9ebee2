#!/bin/sh
# One-shot job of deploy/compose.yaml: the bus certificates, in PKI mode (see the compose file for
# why), made once and kept in named volumes. A restart finds every file and changes nothing; a
# file that is missing is made again (all of them when the CA itself had to be made again).
#
#   CA_DIR    the CA (certificate and key); only this job mounts it
#   NATS_DIR  one certificate per nats-server, mounted at /certs in the NATS containers
#   CP_DIR    one certificate per control plane, mounted at /certs in the control planes
#   DP_DIR    the data planes' certificate (every replica shares it), mounted at /certs in the DPs
#
# Every directory but the CA's also gets ca.crt, the trust anchor of every TLS link.
set -eu

CA_DIR=${CA_DIR:-/pki/ca}
NATS_DIR=${NATS_DIR:-/pki/nats}
CP_DIR=${CP_DIR:-/pki/control-plane}
DP_DIR=${DP_DIR:-/pki/data-plane}
# The zonegate user of deploy/Dockerfile, which must read the node keys (mode 0600); the NATS
# containers run as root. Empty: leave the owner alone.
NODE_OWNER=${NODE_OWNER-10001:10001}

mkdir -p "$CA_DIR" "$NATS_DIR" "$CP_DIR" "$DP_DIR"

renew=no
if [ ! -s "$CA_DIR/ca.crt" ] || [ ! -s "$CA_DIR/ca.key" ]; then
    rm -f "$CA_DIR/ca.crt" "$CA_DIR/ca.key"
    zonegate hybrid gen-ca --cert "$CA_DIR/ca.crt" --key "$CA_DIR/ca.key" --name "zonegate compose CA"
    renew=yes # certificates signed by an earlier CA would not verify any more
fi

# issue DIR ROLE NAME [--host NAME]...: a certificate signed by the CA, unless it is there already.
issue() {
    dir=$1 role=$2 name=$3
    shift 3
    if [ "$renew" = no ] && [ -s "$dir/$name.crt" ] && [ -s "$dir/$name.key" ]; then
        echo "kept $dir/$name.crt"
        return 0
    fi
    rm -f "$dir/$name.crt" "$dir/$name.key" # gen-cert never overwrites
    zonegate hybrid gen-cert "$dir/$name.crt" "$dir/$name.key" \
        --ca "$CA_DIR/ca.crt" --ca-key "$CA_DIR/ca.key" --role "$role" --name "$name" "$@"
}

# nats-servers: their own name (routes and leaf links check the name they dial), "nats" (the name
# every node checks, ZONEGATE_CLUSTER_SERVER_NAME, whichever server it reaches) and, on the hub,
# "nats-hub" (the network alias region B's leaf link dials).
issue "$NATS_DIR" server nats-a1 --host nats --host nats-hub
issue "$NATS_DIR" server nats-a2 --host nats --host nats-hub
issue "$NATS_DIR" server nats-a3 --host nats --host nats-hub
issue "$NATS_DIR" server nats-b1 --host nats
issue "$CP_DIR" control_plane control-plane-1
issue "$CP_DIR" control_plane control-plane-2
issue "$DP_DIR" data_plane data-plane

for dir in "$NATS_DIR" "$CP_DIR" "$DP_DIR"; do
    cp "$CA_DIR/ca.crt" "$dir/ca.crt" # the certificate only: the CA key stays in its own volume
done
if [ -n "$NODE_OWNER" ] && [ "$(id -u)" = 0 ]; then
    chown -R "$NODE_OWNER" "$CP_DIR" "$DP_DIR"
fi
echo "bus certificates ready"
