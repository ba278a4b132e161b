"""Cloud Scheduler: POST to the sweeper every minute with an OIDC token of its own account."""
from __future__ import annotations

import pulumi
from pulumi_gcp import cloudscheduler

from .config import Settings


def create(s: Settings, sweeper_url: pulumi.Input[str], caller_email: pulumi.Input[str],
           opts: pulumi.ResourceOptions) -> cloudscheduler.Job:
    return cloudscheduler.Job(
        "resonate-sweeper-tick", name="resonate-sweeper", region=s.region,
        schedule="* * * * *", time_zone="Etc/UTC",
        attempt_deadline="180s",  # > the 65 s window the call holds
        retry_config=cloudscheduler.JobRetryConfigArgs(retry_count=0),  # the next tick comes in 60 s
        http_target=cloudscheduler.JobHttpTargetArgs(
            http_method="POST", uri=sweeper_url,
            oidc_token=cloudscheduler.JobHttpTargetOidcTokenArgs(
                service_account_email=caller_email, audience=sweeper_url)),
        opts=opts)
