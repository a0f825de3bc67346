# Sourced, not run: a network namespace joined to this host by a veth pair, for a
# bitnet-worker that is "another host" reached over TCP (tests/t_remote.sh,
# bench/remote_scaling.sh). Needs root and ip netns.
#   netns_up TMPDIR   sets NS (the namespace), HOST (this side's address), NSADDR (the
#                     namespace's); 0, or 1 with the reason on stdout
#   netns_down        kills what runs in the namespace and removes it and the link
# Names carry a random tag, so that several runs can share a machine; the addresses are a
# /30 of 198.18.0.0/15 (benchmarking space) that this host does not use yet.

netns_made= netns_link_made= NS= HOST= NSADDR= NETNS_VH= NETNS_VN=

netns_up() {
    local tmp=$1 tag n a b c h g err
    tag=$(printf '%08x' $(( ($$ << 12 ^ RANDOM) & 0xffffffff )))
    NS=bnt-$tag NETNS_VH=bnh-$tag NETNS_VN=bnn-$tag
    for _ in $(seq 1 20); do
        n=$(( (RANDOM << 2 & 0x1fffc) ))   # a /30 boundary within the /15
        a=$(( n >> 16 )) b=$(( n >> 8 & 255 )) c=$(( n & 255 ))
        h="198.$((18 + a)).$b.$((c + 1))" g="198.$((18 + a)).$b.$((c + 2))"
        ip -o -4 addr show | grep -qE " (${h//./\\.}|${g//./\\.})/" && continue
        HOST=$h NSADDR=$g
        break
    done
    [ -n "$HOST" ] || { echo "no free /30 in 198.18.0.0/15"; return 1; }
    if ! err=$(ip netns add "$NS" 2>&1); then
        echo "cannot create network namespace $NS ($err): this needs root and ip netns"
        return 1
    fi
    netns_made=1
    # a group, not a subshell: netns_link_made must survive for netns_down
    if ! { ip link add "$NETNS_VH" type veth peer name "$NETNS_VN" && netns_link_made=1 &&
           ip link set "$NETNS_VN" netns "$NS" && ip addr add "$HOST/30" dev "$NETNS_VH" &&
           ip link set "$NETNS_VH" up && ip netns exec "$NS" ip addr add "$NSADDR/30" dev "$NETNS_VN" &&
           ip netns exec "$NS" ip link set "$NETNS_VN" up && ip netns exec "$NS" ip link set lo up; } \
           2>"$tmp/net.err"; then
        echo "cannot set up veth $NETNS_VH <-> $NS/$NETNS_VN: $(cat "$tmp/net.err")"
        return 1
    fi
    return 0
}

netns_down() {
    # anything still in our namespace was started by this script
    if [ -n "$netns_made" ]; then
        for p in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    fi
    [ -n "$netns_link_made" ] && ip link del "$NETNS_VH" 2>/dev/null
    [ -n "$netns_made" ] && ip netns del "$NS" 2>/dev/null
    netns_made= netns_link_made=
}
