"""The load-balancer shape (`loadBalancer=true`, implied by `domain`): one base URL on a reserved
IP, a global external HTTP(S) load balancer, a serverless NEG per function behind it, `/poll/*` to
poll and everything else (/, /health, /ready, /metrics, ...) to api. The default shape needs none
of this: the api function's own URL is the base URL."""
from __future__ import annotations

import pulumi
from pulumi_gcp import compute

from .config import Settings


def address(opts: pulumi.ResourceOptions) -> compute.GlobalAddress:
    """Reserved first: its IP is the functions' RESONATE_SERVER__URL (no cycle through the LB)."""
    return compute.GlobalAddress("resonate-ip", name="resonate-ip", opts=opts)


def base_url(s: Settings, ip: compute.GlobalAddress) -> pulumi.Output[str]:
    if s.domain:
        return pulumi.Output.from_input(f"https://{s.domain}")
    return ip.address.apply(lambda a: f"http://{a}")


def create(s: Settings, ip: compute.GlobalAddress, services: dict[str, pulumi.Input[str]],
           opts: pulumi.ResourceOptions) -> dict[str, pulumi.Resource]:
    backends = {}
    for fn in ("api", "poll", "sweeper", "dispatch"):  # one NEG per function (sweeper/dispatch unrouted)
        neg = compute.RegionNetworkEndpointGroup(
            f"neg-{fn}", name=f"resonate-{fn}", region=s.region, network_endpoint_type="SERVERLESS",
            cloud_run=compute.RegionNetworkEndpointGroupCloudRunArgs(service=services[fn]), opts=opts)
        if fn in ("api", "poll"):
            backends[fn] = compute.BackendService(
                f"backend-{fn}", name=f"resonate-{fn}", load_balancing_scheme="EXTERNAL_MANAGED",
                protocol="HTTPS", backends=[compute.BackendServiceBackendArgs(group=neg.id)], opts=opts)
    url_map = compute.URLMap(
        "resonate-urlmap", name="resonate", default_service=backends["api"].id,
        host_rules=[compute.URLMapHostRuleArgs(hosts=["*"], path_matcher="resonate")],
        path_matchers=[compute.URLMapPathMatcherArgs(
            name="resonate", default_service=backends["api"].id,
            path_rules=[
                compute.URLMapPathMatcherPathRuleArgs(paths=["/poll", "/poll/*"], service=backends["poll"].id),
                compute.URLMapPathMatcherPathRuleArgs(paths=["/", "/health", "/ready", "/metrics"],
                                                      service=backends["api"].id),
            ])],
        opts=opts)
    out: dict[str, pulumi.Resource] = {"url_map": url_map, **{f"backend_{k}": v for k, v in backends.items()}}
    proxy: compute.TargetHttpsProxy | compute.TargetHttpProxy
    if s.domain:
        cert = compute.ManagedSslCertificate(
            "resonate-cert", name="resonate-cert",
            managed=compute.ManagedSslCertificateManagedArgs(domains=[s.domain]), opts=opts)
        proxy = compute.TargetHttpsProxy("resonate-https", name="resonate-https", url_map=url_map.id,
                                         ssl_certificates=[cert.id], opts=opts)
        port = "443"
        out["cert"] = cert
    else:
        proxy = compute.TargetHttpProxy("resonate-http", name="resonate-http", url_map=url_map.id, opts=opts)
        port = "80"
    out["proxy"] = proxy
    out["rule"] = compute.GlobalForwardingRule(
        "resonate-rule", name="resonate", target=proxy.id, ip_address=ip.address, port_range=port,
        load_balancing_scheme="EXTERNAL_MANAGED", ip_protocol="TCP", opts=opts)
    return out
