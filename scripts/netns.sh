#!/usr/bin/env bash
# Hosts for cluster tests: network namespaces pspc-h1 ... pspc-hN, each joined to this namespace by a veth pair.
# Host i is 10.77.i.2 (device eth0 inside); this side of its link is pspc-v<i> at 10.77.i.1. Needs root.
#
#   scripts/netns.sh up N [RATE]   create N hosts (removing any earlier ones); RATE (e.g. 200mbit) limits each
#                                  link with a token bucket (tc tbf) in both directions
#   scripts/netns.sh cut I         take host I's link down (the host is cut off; its processes keep running)
#   scripts/netns.sh down          remove every pspc-h* namespace (idempotent; their links go with them)
set -euo pipefail

down() {
    for ns in $(ip netns list 2>/dev/null | awk '/^pspc-h[0-9]+/ {print $1}'); do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$ns"
    done
    # A namespace lives on while a process in it does; its link is removed here all the same.
    for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | grep -oE '^pspc-v[0-9]+'); do
        ip link del "$link" 2>/dev/null || true
    done
}

case "${1:-}" in
    up)
        count="${2:?usage: $0 up N [RATE]}"
        rate="${3:-}"
        down
        for i in $(seq 1 "$count"); do
            ns="pspc-h$i"
            ip netns add "$ns"
            ip link add "pspc-v$i" type veth peer name eth0 netns "$ns"
            ip addr add "10.77.$i.1/24" dev "pspc-v$i"
            ip link set "pspc-v$i" up
            ip netns exec "$ns" ip addr add "10.77.$i.2/24" dev eth0
            ip netns exec "$ns" ip link set eth0 up
            ip netns exec "$ns" ip link set lo up
            if [ -n "$rate" ]; then
                tc qdisc add dev "pspc-v$i" root tbf rate "$rate" burst 256kb latency 100ms
                ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "$rate" burst 256kb latency 100ms
            fi
        done
        ;;
    cut)
        ip link set "pspc-v${2:?usage: $0 cut I}" down
        ;;
    down)
        down
        ;;
    *)
        echo "usage: $0 up N [RATE] | cut I | down" >&2
        exit 2
        ;;
esac
