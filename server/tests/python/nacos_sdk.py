"""The real Python SDK (nacos-sdk-python 3.x, package `v2.nacos`) against a distro cluster.

Run by the Rust test `nacos::python_sdk` (server/tests/it/nacos/python_sdk.rs) with the
main addresses of three nodes: A registers through the first, B subscribes through the
second, C reads through the third. An optional fourth argument `user:password` gives every
client those credentials (the SDK logs in with `/nacos/v1/auth/users/login` and sends the
token with each request), for a cluster with auth on. Prints PYTHON-SDK-OK and exits 0 when every check
holds; any failure raises (exit 1) with what was expected and what came.

Over TLS (nodes with --tls-cert/--tls-key): DISTRO_PY_TLS_CA names the PEM CA file to
trust, DISTRO_PY_TLS_CERT and DISTRO_PY_TLS_KEY a client certificate and key. The SDK
(3.2.0) opens all three files whenever TLS is on, though the SDK port asks for no client
certificate (so it is never sent): without them it fails with `No such file or directory:
''`. With `--refused ADDR` instead of three addresses, one client registers through ADDR
and must be refused (a CA that did not sign the node's certificate, or no TLS): prints
PYTHON-SDK-REFUSED and the SDK's error, exits 0.
"""

import asyncio
import os
import sys
import tempfile
import time

from v2.nacos import (ClientConfigBuilder, DeregisterInstanceParam, ListInstanceParam,
                      ListServiceParam, NacosNamingService, RegisterInstanceParam,
                      SubscribeServiceParam)
from v2.nacos.common.client_config import TLSConfig
from v2.nacos.common.nacos_exception import NacosException

DEADLINE = 20.0
SERVICE = "py-orders"


CREDENTIALS = sys.argv[4].split(":", 1) if len(sys.argv) > 4 else None


async def client(addr: str) -> NacosNamingService:
    tmp = tempfile.mkdtemp(prefix="distro-py-nacos-")
    builder = (ClientConfigBuilder().server_address(addr).namespace_id("public")
               .log_level("WARNING").log_dir(tmp).cache_dir(tmp))
    if CREDENTIALS:
        builder = builder.username(CREDENTIALS[0]).password(CREDENTIALS[1])
    if os.environ.get("DISTRO_PY_TLS_CA"):
        builder = builder.tls_config(TLSConfig(
            enabled=True, ca_file=os.environ["DISTRO_PY_TLS_CA"],
            cert_file=os.environ["DISTRO_PY_TLS_CERT"], key_file=os.environ["DISTRO_PY_TLS_KEY"]))
    return await NacosNamingService.create_naming_service(builder.build())


async def eventually(what: str, check):
    """Awaits `check()` until it returns something truthy, failing after DEADLINE."""
    start = time.monotonic()
    last = None
    while time.monotonic() - start < DEADLINE:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {DEADLINE}s waiting for {what}; last: {last!r}")


def addrs(instances) -> list:
    return sorted(f"{i.ip}:{i.port}" for i in instances)


async def main(a_addr: str, b_addr: str, c_addr: str) -> None:
    b = await client(b_addr)
    pushes = []

    async def on_push(instances):
        pushes.append(addrs(instances))

    await b.subscribe(SubscribeServiceParam(service_name=SERVICE, subscribe_callback=on_push))

    a = await client(a_addr)
    ok = await a.register_instance(RegisterInstanceParam(
        service_name=SERVICE, ip="10.0.8.1", port=8080, weight=2.5, cluster_name="c1",
        metadata={"zone": "a"}))
    assert ok, "register_instance returned False"

    async def pushed_a():
        return ["10.0.8.1:8080"] in pushes
    await eventually("B's push of A's instance", pushed_a)

    c = await client(c_addr)

    async def read():
        got = await c.list_instances(ListInstanceParam(
            service_name=SERVICE, subscribe=False, healthy_only=None))
        return got if len(got) == 1 else None
    got = await eventually("C reads A's instance", read)
    i = got[0]
    want = {"instanceId": "10.0.8.1#8080#c1#DEFAULT_GROUP@@py-orders", "ip": "10.0.8.1",
            "port": 8080, "weight": 2.5, "healthy": True, "enabled": True, "ephemeral": True,
            "clusterName": "c1", "serviceName": "DEFAULT_GROUP@@py-orders",
            "metadata": {"zone": "a"}}
    for field, value in want.items():
        assert getattr(i, field) == value, f"{field}: want {value!r}, got {getattr(i, field)!r}"

    services = await c.list_services(ListServiceParam(namespace_id="public", page_no=1,
                                                      page_size=10))
    assert SERVICE in services.services, f"service list: {services!r}"

    # D stays (through C's node), so the view after A leaves is not empty: the SDK ignores
    # empty pushes by default.
    d = await client(c_addr)
    assert await d.register_instance(RegisterInstanceParam(
        service_name=SERVICE, ip="10.0.8.2", port=9090))

    async def pushed_both():
        return ["10.0.8.1:8080", "10.0.8.2:9090"] in pushes
    await eventually("B's push of both instances", pushed_both)

    ok = await a.deregister_instance(DeregisterInstanceParam(
        service_name=SERVICE, ip="10.0.8.1", port=8080, cluster_name="c1"))
    assert ok, "deregister_instance returned False"

    async def pushed_d():
        return pushes[-1] == ["10.0.8.2:9090"]
    await eventually("B's push without A's instance", pushed_d)

    async def c_sees_d():
        got = await c.list_instances(ListInstanceParam(
            service_name=SERVICE, subscribe=False, healthy_only=None))
        return addrs(got) == ["10.0.8.2:9090"]
    await eventually("C's view without A's instance", c_sees_d)
    for s in (a, b, c, d):
        await s.shutdown()
    print("PYTHON-SDK-OK", flush=True)


async def refused(addr: str) -> None:
    """A client that must not get through: its registration fails."""
    try:
        a = await client(addr)
        ok = await a.register_instance(RegisterInstanceParam(
            service_name=SERVICE, ip="10.0.8.9", port=8080))
    except NacosException as e:
        print(f"PYTHON-SDK-REFUSED {e}", flush=True)
        return
    raise AssertionError(f"the registration was not refused: register_instance returned {ok!r}")


if __name__ == "__main__":
    if sys.argv[1] == "--refused":
        asyncio.run(refused(sys.argv[2]))
    else:
        asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
