"""Agent-as-code: the bundle models and their loader."""

from voxgate.bundle.loader import BundleError, Problem, expand_env, load_bundle
from voxgate.bundle.models import Agent, BundleSource, Topic

__all__ = ["Agent", "BundleError", "BundleSource", "Problem", "Topic", "expand_env", "load_bundle"]
