#!/usr/bin/env python3
"""Breaks a `perf script -F comm,tid,ip,sym,dso` dump of a loadgen run down by component.

Each sample's stack is walked from the leaf towards the root; the first frame that
matches a rule below names the sample's component (so a registry insert reached through a
forwarded batch counts as "core store", its encode as "forwarding"). Separately, the leaf
says whether the cycles were spent in the allocator, in memcpy/memcmp, or in the kernel.
Usage: perf script -i perf.data -F comm,tid,ip,sym,dso | classify.py
"""
import collections
import re
import sys

# (component, regex on the symbol), most specific first.
RULES = [
    ("forwarding (Peer.Forward build/encode/decode/answer)",
     r"ForwardRequest|ForwardResponse|PeerClients::forward|Forwarder::apply_forwarded|Peer>::forward|PeerService.*forward"),
    ("watch hub", r"WatchHub|service_changed|ChangeListener"),
    ("metrics", r"distro_server::metrics::"),
    # The compact decoder (and the service resolution it calls) and the replica's apply, by
    # today's symbols: until 2026-12-06 these two rules named functions that no longer
    # existed, so the decoder's samples fell to "sync: encode" (its caller
    # `SyncRequest::decode_batch` matched `SyncRequest`) and the apply's to "core store";
    # `Node::x` patterns did not match the symbols of methods in `impl Node` blocks of other
    # modules (`<impl distro_core::node::Node>::x`): `Node>?::` matches both.
    ("replica: sync decode", r"compact::decode|SyncRequest::decode|SnapshotChunk::decode|decode_batch|decode_records|ServiceResolver|resolve_service|SyncRequest as prost::Message>::merge|decode_change|decode_record|parse_publication"),
    ("replica: sync apply (core)", r"registry::replica::|Registry::replace_batched|Node>?::handle_sync|Node>?::apply_changes|Node>?::load_states|Node>?::apply_sync"),
    ("sync: encode", r"sync_codec::|SyncRequest"),
    ("sync: build/schedule (core)", r"Node>?::flush|to_record|SyncScheduler|Node>?::after_write|distro_core::sync::"),
    ("core store: register/beat", r"distro_core::"),
    ("server: ops/routing/validation", r"distro_server::cluster::forward::|distro_server::cluster::wire::|distro_server::api::native::"),
    ("server: proto decode/encode", r"distro_server::proto::"),
    ("loadgen: driver", r"loadgen::(run::)?driver::"),
    ("loadgen: native encode/decode", r"loadgen::(protocol::)?native::"),
    ("loadgen: other", r"loadgen::"),
    ("tonic/hyper/h2", r"^(<)?(tonic|hyper|h2|tower|http_body|hyper_util)::|<(tonic|hyper|h2|tower)::"),
    ("tokio runtime", r"tokio::"),
]
RULES = [(n, re.compile(p)) for n, p in RULES]

ALLOC = re.compile(r"malloc|_int_free|cfree|free$|realloc|unlink_chunk|consolidate|mi_|_mi_|tcache|__libc_free|__rust_alloc|__rust_dealloc|alloc::alloc::")
MEM = re.compile(r"memmove|memcpy|memset|memcmp|memchr")


def samples(lines):
    head, stack = None, []
    for line in lines:
        line = line.rstrip("\n")
        if not line:
            if head is not None:
                yield head, stack
            head, stack = None, []
        elif not line.startswith("\t") and not line.startswith(" "):
            head, stack = line, []
        else:
            parts = line.strip().split(" ", 1)
            if len(parts) == 2:
                sym = parts[1].rsplit(" (", 1)
                dso = sym[1].rstrip(")") if len(sym) == 2 else ""
                stack.append((sym[0], dso))
    if head is not None:
        yield head, stack


CONTEXTS = [
    ("replica: Peer.Sync handler and its apply thread", r"PeerService as distro_server::proto::distro::peer_server::Peer>::sync|peer_server::Peer>::sync|cluster::peer::\{impl#\d+\}::sync|Node>?::handle_sync|SyncRequest::decode_batch"),
    ("owner: Peer.Forward handler", r"Peer>::forward|apply_forwarded"),
    ("owner: client write handler (Registry.Register)", r"RegistryService as distro_server::proto::distro::registry_server::Registry>::|Registry>::register|Registry>::heartbeat|RegistryService::write|Forwarder::apply"),
    ("owner: sync tick (Node::tick / flush)", r"Node>?::tick|Node>?::flush|Driver::run"),
    ("owner: peer call (sync send)", r"PeerClients::call|Driver::execute"),
    ("loadgen driver/protocol", r"loadgen::(run::)?driver|loadgen::(protocol::)?native|loadgen::run|loadgen::(measure::)?recorder|loadgen::(run::)?markers"),
    ("cluster teardown (drop)", r"drop_in_place<distro_server::local_cluster|LocalCluster::|drop_in_place<distro_core::node::Node"),
    ("tonic/hyper/h2 connection", r"h2::|hyper::|tonic::"),
]
CONTEXTS = [(n, re.compile(p)) for n, p in CONTEXTS]


def context(stack):
    for n, rx in CONTEXTS:
        for sym, _ in stack:
            if rx.search(sym):
                return n
    return "other"


def main():
    ctx = collections.Counter()
    comp = collections.Counter()
    leaf = collections.Counter()
    by_thread = collections.Counter()
    both = collections.Counter()
    total = 0
    for head, stack in samples(sys.stdin):
        thread = re.sub(r"\s+\d+\s*$", "", head).strip()
        thread = re.sub(r"\d+$", "", thread) or thread
        total += 1
        by_thread[thread] += 1
        name = "other"
        for sym, _dso in stack:
            for n, rx in RULES:
                if rx.search(sym):
                    name = n
                    break
            if name != "other":
                break
        comp[name] += 1
        ctx[(context(stack), name)] += 1
        l = stack[0] if stack else ("?", "?")
        if "kernel" in l[1]:
            lk = "kernel"
        elif ALLOC.search(l[0]):
            lk = "allocator"
        elif MEM.search(l[0]):
            lk = "memcpy/memcmp"
        else:
            lk = "user code"
        leaf[lk] += 1
        both[(name, lk)] += 1
    pct = lambda n: 100.0 * n / max(total, 1)
    print(f"samples: {total}\n")
    print("| thread | share |\n|---|---:|")
    for t, n in by_thread.most_common():
        print(f"| {t} | {pct(n):.1f} % |")
    print("\n| component (first matching frame, leaf upwards) | share | of which allocator | kernel |\n|---|---:|---:|---:|")
    for c, n in comp.most_common():
        print(f"| {c} | {pct(n):.1f} % | {pct(both[(c, 'allocator')]):.1f} % | {pct(both[(c, 'kernel')]):.1f} % |")
    print("\n| context (outermost matching frame) | component | share |\n|---|---|---:|")
    tot = collections.Counter()
    for (c, n), v in ctx.items():
        tot[c] += v
    for c, v in tot.most_common():
        print(f"| **{c}** | (all) | **{pct(v):.1f} %** |")
        for (c2, n), v2 in sorted(ctx.items(), key=lambda kv: -kv[1]):
            if c2 == c and pct(v2) >= 0.5:
                print(f"| | {n} | {pct(v2):.1f} % |")
    print("\n| leaf | share |\n|---|---:|")
    for c, n in leaf.most_common():
        print(f"| {c} | {pct(n):.1f} % |")


if __name__ == "__main__":
    main()
