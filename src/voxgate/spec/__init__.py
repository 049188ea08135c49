"""Agent-as-code: the bundle models and their loader."""

from voxgate.spec.loader import BundleError, Problem, expand_env, load_bundle
from voxgate.spec.models import Agent, BundleSource, Topic

__all__ = ["Agent", "BundleError", "BundleSource", "Problem", "Topic", "expand_env", "load_bundle"]
