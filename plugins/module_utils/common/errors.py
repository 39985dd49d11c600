# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every error of tunion.keymgmt: one base, :class:`TunionError`, so a module maps them to fail_json in one place.

Messages are safe to show: they never carry key material, PINs or tokens.
"""

from __future__ import annotations


class TunionError(Exception):
    """Base of every error the collection raises on purpose; ``errors`` (optional) lists each problem found."""

    errors: list[str] | None = None


class HsmError(TunionError):
    """An HSM operation failed. The message is safe to show: it never holds key material or PINs."""


class OpenBaoError(TunionError):
    """A failure to talk to OpenBao, phrased for the operator; never carries a secret."""


class KeyBlockError(TunionError):
    """A block is malformed, fails its MAC, or does not fit the city; nothing was installed."""


class BlacklistError(TunionError):
    """The blacklist is malformed, fails its MAC, or is older than the one held. Nothing was installed."""


class DistributionError(TunionError):
    """A distribution step cannot go on; the message says what to do. Never carries key material."""


class RevocationError(TunionError):
    """A revocation request cannot be carried out as asked; nothing was changed. Never carries a secret."""


class RegistryError(TunionError, ValueError):
    """The SAM registry (desired CSV or observed SQLite) is refused; ``errors`` lists each problem."""

    errors: list[str]

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        more = f" (and {len(errors) - 20} more)" if len(errors) > 20 else ""
        super().__init__("SAM registry refused: " + "; ".join(errors[:20]) + more)


class ComponentError(TunionError, ValueError):
    """A custodian's key component is missing or malformed. The message never holds the component."""


class CatalogueError(TunionError, ValueError):
    """The catalogue breaks one or more rules; ``errors`` lists each one as a sentence."""

    errors: list[str]

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("key catalogue refused: " + "; ".join(errors))


class SamError(TunionError):
    """A SAM or reader problem; the message is safe to show (never a key value)."""


class CardGone(SamError):
    """The SAM left the reader (or the reader failed) during a session."""


class StatusWordError(SamError):
    """A SAM answered a status word other than 9000; ``meaning`` is its text in the PSAM profile (pcsc/psam.py)."""

    def __init__(self, what: str, sw: int, meaning: str = "unexpected status") -> None:
        self.sw = sw
        super().__init__(f"{what}: SAM answered {sw:04X} ({meaning})")


class PolicyError(TunionError, ValueError):
    """A request that the province's rules forbid; nothing was sent to any SAM."""


class SamInjectionInvariantError(TunionError, RuntimeError):
    """Something the injection sequence relies on changed under it; the SAM is reported failed."""


class BackupError(TunionError):
    """A backup set cannot be made, or is refused for a restore (bad MAC, digest, share); nothing was written."""


class JournalError(TunionError):
    """A journal event that is malformed, a journal that cannot be written, or a chain that does not verify."""
