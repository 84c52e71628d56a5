"""Everything a gateway worker holds, built once at start-up and passed explicitly."""

from __future__ import annotations

from dataclasses import dataclass

from airlock.config.schema import Config
from airlock.gateway.auth import Authenticator
from airlock.gateway.egress import EgressClient
from airlock.gateway.forward import Forwarder
from airlock.gateway.metrics import GatewayMetrics
from airlock.gateway.routing import Router
from airlock.guards import GuardChain
from airlock.record.link import RecorderLink
from airlock.store import Stores


@dataclass
class GatewayState:
    config: Config
    stores: Stores
    recorder: RecorderLink
    router: Router
    auth: Authenticator
    egress: EgressClient
    metrics: GatewayMetrics
    forwarder: Forwarder
    guards: GuardChain  # the model call's guards, in order
    durable_wait_s: float = 5.0
