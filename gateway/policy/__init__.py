"""Policy files: schema, loading with line numbers, and hot reload."""

from gateway.policy.errors import ConfigError, ConfigProblem
from gateway.policy.loader import load_policy, policy_json_schema
from gateway.policy.schema import Policy

__all__ = ["ConfigError", "ConfigProblem", "Policy", "load_policy", "policy_json_schema"]
