"""``orc_executor.executor.profiles``: one row per profile of :mod:`orc_executor.protocol.names`,
aliases that point at wrapper functions the profile serves with the same signature, and
contexts built from the tables alone (no per-service flags)."""

from __future__ import annotations

import inspect

import pytest

from orc_executor.executor import profiles
from orc_executor.executor.bootstrap import build_context, setup_info
from orc_executor.executor.services.dylib_manager import DylibManagerService
from orc_executor.protocol import names


def test_one_row_per_profile() -> None:
    assert tuple(profiles.PROFILE_TABLE) == names.PROFILES
    assert all(row.name == name for name, row in profiles.PROFILE_TABLE.items())
    with pytest.raises(ValueError, match="unknown profile '19'"):
        profiles.profile("19")


@pytest.mark.parametrize("profile", names.PROFILES)
def test_aliases_are_lookup_only_names_of_served_wrappers(profile: str) -> None:
    row = profiles.profile(profile)
    served = names.served(profile)
    for alias, target in row.aliases.items():
        assert alias in row.lookup_only
        assert served[target].advertised
        assert served[alias].signature is served[target].signature


@pytest.mark.parametrize("profile", names.PROFILES)
def test_aliases_answer_with_their_target_and_the_setup_layout_follows_the_row(
    profile: str,
) -> None:
    row = profiles.profile(profile)
    ctx = build_context(profile)
    dylib = next(s for s in ctx.registry.services if isinstance(s, DylibManagerService))
    for alias, target in row.aliases.items():
        assert alias not in ctx.registry.addr_of
        assert dylib.lookup_only[alias] == ctx.registry.addr_of[target]
    assert setup_info(ctx).layout14 == row.setup_layout14


def test_services_take_no_profile_flags() -> None:
    """Which names a service registers is the profile's table, not constructor flags."""
    ctx = build_context("modern")
    for service in ctx.registry.services:
        params = inspect.signature(type(service).__init__).parameters
        flags = [p for p in params.values() if p.kind is p.KEYWORD_ONLY and p.name != "map_dir"]
        assert not flags, (service.service_name, flags)
