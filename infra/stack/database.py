"""Cloud SQL for PostgreSQL: not reachable from any network (public IP without authorized
networks: only the Cloud SQL connector's IAM-authorised mutual-TLS tunnel gets in), backups and
point-in-time recovery on; the login URL (with the random password) lives in Secret Manager."""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_random as random
from pulumi_gcp import secretmanager, sql

from .config import Settings


@dataclass
class Database:
    instance: sql.DatabaseInstance
    connection_name: pulumi.Output[str]
    url_secret: secretmanager.Secret
    url_version: secretmanager.SecretVersion
    password: pulumi.Output[str]


def create(s: Settings, opts: pulumi.ResourceOptions) -> Database:
    instance = sql.DatabaseInstance(
        "resonate-db",
        database_version=s.db_version,
        region=s.region,
        deletion_protection=s.deletion_protection,  # Pulumi-side guard
        settings=sql.DatabaseInstanceSettingsArgs(
            tier=s.db_tier,
            availability_type="ZONAL",
            deletion_protection_enabled=s.deletion_protection,  # API-side guard
            backup_configuration=sql.DatabaseInstanceSettingsBackupConfigurationArgs(
                enabled=True, point_in_time_recovery_enabled=True, start_time="03:00",
                transaction_log_retention_days=7,
                backup_retention_settings=sql.DatabaseInstanceSettingsBackupConfigurationBackupRetentionSettingsArgs(
                    retained_backups=7),
            ),
            ip_configuration=sql.DatabaseInstanceSettingsIpConfigurationArgs(
                # the connector dials the public address through Google's mTLS proxy; with no
                # authorized network nothing else can connect (no VPC / connector to pay for)
                ipv4_enabled=True, authorized_networks=[], ssl_mode="ENCRYPTED_ONLY",
            ),
            database_flags=[sql.DatabaseInstanceSettingsDatabaseFlagArgs(name="max_connections", value="200")],
        ),
        opts=opts,
    )
    db = sql.Database("resonate-database", name=s.db_name, instance=instance.name, opts=opts)
    password = random.RandomPassword("resonate-db-password", length=32, special=False)
    user = sql.User("resonate-db-user", name=s.db_user, instance=instance.name, password=password.result,
                    opts=opts)
    url_secret = secretmanager.Secret(
        "resonate-db-url", secret_id="resonate-db-url",
        replication=secretmanager.SecretReplicationArgs(auto=secretmanager.SecretReplicationAutoArgs()),
        opts=opts)
    # the whole login URL is the secret: the server reads user, password and database from
    # RESONATE_STORAGE__POSTGRES__URL (its host is ignored when ...__INSTANCE is set)
    login: pulumi.Output[str] = pulumi.Output.concat("postgres://", s.db_user, ":", password.result, "@/", s.db_name)
    url: pulumi.Output[str] = pulumi.Output.secret(login)
    version = secretmanager.SecretVersion(
        "resonate-db-url-v", secret=url_secret.id, secret_data=url,
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[user, db])))
    return Database(instance, instance.connection_name, url_secret, version, password.result)
