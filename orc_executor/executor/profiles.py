"""Per-profile tables: what differs between executor profiles besides the names they serve.

The names each profile serves, with their signatures and whether Setup advertises them, come
from :func:`orc_executor.protocol.names.served` (itself derived from the per-version table
:data:`orc_executor.protocol.names.TABLE`). The services register exactly those names
(:func:`orc_executor.executor.bootstrap.build_context`); this module adds the rest of a
profile, one :class:`Profile` row each, so that adding a version is editing tables:

* the Setup layout (LLVM 14's ``(triple, page size, bootstrap symbols)``, or 15+'s
  ``SimpleRemoteEPCExecutorInfo`` with a bootstrap map);
* aliases: names answered through dylib lookup only, at the address of another wrapper
  function of the same profile (llvm-jitlink 14 looks up the 19 EH-frame names and calls
  the 14 ``__llvm_orc_bootstrap_*`` wrappers the stock 14 executor exports under them).

Pure: imports only the name table (no trio, no cffi).
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from ..protocol import names
from ..protocol.names import PROFILES, VERSION_PROFILES, Bootstrap, EHFrame, ServedName

__all__ = ["PROFILES", "PROFILE_TABLE", "VERSION_PROFILES", "Profile", "profile"]


@dataclass(frozen=True)
class Profile:
    """One executor profile.

    ``setup_layout14``: Setup uses LLVM 14's layout (no bootstrap map). ``aliases``:
    lookup-only name → the served wrapper function whose address answers it (a name here is
    never registered as a wrapper function of its own).
    """

    name: str
    setup_layout14: bool
    aliases: Mapping[str, str]

    @property
    def served(self) -> Mapping[str, ServedName]:
        """Every name this profile answers (:func:`names.served`)."""
        return names.served(self.name)

    @property
    def lookup_only(self) -> frozenset[str]:
        """Names answered through dylib lookup without being listed in Setup."""
        return names.lookup_only(self.name)


#: Every profile, by name (the keys are :data:`names.PROFILES`).
PROFILE_TABLE: Final[Mapping[str, Profile]] = types.MappingProxyType({
    "14": Profile(
        "14",
        setup_layout14=True,
        aliases=types.MappingProxyType({
            EHFrame.register_section_wrapper: Bootstrap.register_ehframe_section,
            EHFrame.deregister_section_wrapper: Bootstrap.deregister_ehframe_section,
        }),
    ),
    "modern": Profile("modern", setup_layout14=False, aliases=types.MappingProxyType({})),
})


def profile(name: str) -> Profile:
    """The :class:`Profile` called ``name``; ``ValueError`` for an unknown one."""
    found = PROFILE_TABLE.get(name)
    if found is None:
        raise ValueError(f"unknown profile {name!r} (choose from {', '.join(PROFILES)})")
    return found
